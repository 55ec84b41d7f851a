// Key Vault for the app's secrets: the commerce client secret (only when the commerce endpoint
// is called with a client secret rather than the managed identity), the Azure Stack service
// principal secret (likewise, for USAGE_SOURCE=azurestack) and the continuation-token
// signing key. RBAC mode: access is granted by role assignments (rbac.bicep), never by access
// policies. App settings reference the versionless secret URIs, so a rotated secret is picked up
// without redeploying.

@description('Key Vault name: 3-24 letters, digits and hyphens, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the vault.')
param location string

@description('Tags for the vault.')
param tags object = {}

@secure()
@description('Commerce client secret. Empty: no secret is written (managed identity, or an operator sets it later).')
param commerceClientSecret string = ''

@secure()
@description('Azure Stack service principal secret (USAGE_SOURCE=azurestack). Empty: no secret is written (managed identity).')
param azureStackClientSecret string = ''

@secure()
@description('Key that signs query_usage continuation tokens.')
param continuationTokenSigningKey string

var commerceClientSecretName = 'commerce-client-secret'
var continuationTokenSigningKeyName = 'continuation-token-signing-key'
var azureStackClientSecretName = 'azurestack-client-secret'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: name
  location: location
  tags: tags
  properties: {
    tenantId: subscription().tenantId
    sku: {
      family: 'A'
      name: 'standard'
    }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 7
    // Purge protection is left off so `azd down --purge` can remove a dev environment; turn it
    // on (it cannot be turned off again) for a long-lived production vault.
    publicNetworkAccess: 'Enabled'
  }
}

resource commerceSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(commerceClientSecret)) {
  parent: vault
  name: commerceClientSecretName
  properties: {
    value: commerceClientSecret
  }
}

resource azureStackSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(azureStackClientSecret)) {
  parent: vault
  name: azureStackClientSecretName
  properties: {
    value: azureStackClientSecret
  }
}

resource signingKey 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: continuationTokenSigningKeyName
  properties: {
    value: continuationTokenSigningKey
  }
}

output name string = vault.name
output resourceId string = vault.id
output uri string = vault.properties.vaultUri
// App-setting values that resolve to the latest version of each secret (through the identity
// named by the site's keyVaultReferenceIdentity).
output commerceClientSecretReference string = '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${commerceClientSecretName}/)'
output azureStackClientSecretReference string = '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${azureStackClientSecretName}/)'
output continuationTokenSigningKeyReference string = '@Microsoft.KeyVault(SecretUri=${vault.properties.vaultUri}secrets/${continuationTokenSigningKeyName}/)'

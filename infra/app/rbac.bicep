// Role assignments: what the app's managed identity (and, optionally, the deploying user) may
// do. Each assignment is named guid(scope, principal, role), so redeploying finds the same one
// instead of failing on a duplicate.

@description('The storage account holding host storage, usage tables and work-item queues.')
param storageAccountName string

@description('The Application Insights component the host writes telemetry to.')
param applicationInsightsName string

@description('The Key Vault holding the app secrets.')
param keyVaultName string

@description('Principal (object) id of the app\'s user-assigned managed identity.')
param managedIdentityPrincipalId string

@description('Object id of the deploying user, for local debugging against the cloud resources. Empty: none.')
param userPrincipalId string = ''

// Built-in role definition ids (https://learn.microsoft.com/azure/role-based-access-control/built-in-roles).
var roles = {
  // Deployment package container (Flex Consumption pulls the zip with the identity), the
  // host's own blob containers (timer schedule monitor, singleton locks): host storage; and
  // export_usage's FOCUS files (it creates, writes, lists and deletes blobs: Owner includes
  // everything Storage Blob Data Contributor grants).
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  // Usage rows, subscriptions, watermark, quarantine and billing ledger tables.
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  // Work-item queues: collection work items (collect-work) and billing work items
  // (usage-to-report), which the app enqueues and its queue triggers dequeue.
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  // Application Insights ingestion with Entra ID (local auth is disabled).
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  // Key Vault references in app settings (read secret values).
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  // The deploying user sets or rotates secrets (e.g. the commerce client secret).
  keyVaultSecretsOfficer: 'b86a8fe4-44ce-4948-aee5-eccb2c155cd7'
}

// Blob Data Owner is granted on the account, not only the deployment container: the host keeps
// timer and lock blobs in containers it creates itself (azure-webjobs-hosts).
var storageRoles = [
  roles.storageBlobDataOwner
  roles.storageTableDataContributor
  roles.storageQueueDataContributor
]

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: keyVaultName
}

resource appStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in storageRoles: {
  name: guid(storage.id, managedIdentityPrincipalId, roleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}]

resource appMetricsPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(applicationInsights.id, managedIdentityPrincipalId, roles.monitoringMetricsPublisher)
  scope: applicationInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

resource appSecretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, managedIdentityPrincipalId, roles.keyVaultSecretsUser)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
    principalId: managedIdentityPrincipalId
    principalType: 'ServicePrincipal'
  }
}

// The deploying user (azd's AZURE_PRINCIPAL_ID): same storage data access as the app, so the
// local host can run against the cloud account with DefaultAzureCredential; and secret
// management. principalType is left out: it may be a user or, in CI, a service principal.
// (An empty array rather than a loop-level `if`: the same result, and pycep can parse it.)
var userStorageRoleIds = empty(userPrincipalId) ? [] : storageRoles

resource userStorageRoles 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for roleId in userStorageRoleIds: {
  name: guid(storage.id, userPrincipalId, roleId)
  scope: storage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleId)
    principalId: userPrincipalId
  }
}]

resource userSecretsOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(userPrincipalId)) {
  name: guid(vault.id, userPrincipalId, roles.keyVaultSecretsOfficer)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsOfficer)
    principalId: userPrincipalId
  }
}

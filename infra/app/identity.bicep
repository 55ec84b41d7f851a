// The function app's user-assigned managed identity: the one principal that reads and writes
// storage, publishes telemetry and reads Key Vault secrets. User-assigned (not system-assigned)
// so its role assignments exist before the app first starts, and survive re-creating the app.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region of the identity.')
param location string

@description('Tags for the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output name string = identity.name
output resourceId string = identity.id
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId

// The app's storage account: host storage (timer leases, deployment package) plus the usage
// tables and the work-item queues (collection, billing). Entra ID only: shared keys are
// disabled, so no connection string with an account key can exist for it.

@description('Storage account name: 3-24 lowercase letters and digits, globally unique.')
@minLength(3)
@maxLength(24)
param name string

@description('Azure region of the account.')
param location string

@description('Tags for the account.')
param tags object = {}

@description('Prefix of every usage table name, "{prefix}{role}" (USAGE_TABLE_PREFIX); main.bicep checks it against the table-name rule.')
@minLength(3)
@maxLength(24)
param tablePrefix string

@description('Blob container that holds the Flex Consumption deployment package.')
param deploymentContainerName string

@description('The billing work-item queue (report_to_azure trigger); its poison queue is created too.')
param reportQueueName string

@description('The collection work-item queue (COLLECT_QUEUE_NAME: one item per source, hour and slice); its poison queue is created too. Must match function-app.bicep\'s collectQueueName.')
param collectQueueName string = 'collect-work'

// The table roles of shared/storage/account.py TABLE_ROLES. Usage rows live in one table per tenant
// subscription, which the app creates on first write (Table Data Contributor allows it); these
// exist up front so the first run and operators see the full layout.
var tableRoles = [
  'hours'
  'subscriptions'
  'state'
  'quarantine'
  'ledger'
  'activity'
  'summaries'
  'prices'
  'charges'
  'costdigests'
  'adjustments'
  'exports'
]

// The Functions host moves a message here after maxDequeueCount failed deliveries.
var queueNames = [
  reportQueueName
  '${reportQueueName}-poison'
  collectQueueName
  '${collectQueueName}-poison'
]

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: name
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    allowSharedKeyAccess: false // Entra ID only: no account keys, no SAS signed with them
    defaultToOAuthAuthentication: true
    allowBlobPublicAccess: false
    allowCrossTenantReplication: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    dnsEndpointType: 'Standard'
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      defaultAction: 'Allow'
      bypass: 'AzureServices'
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

// export_usage's default container (shared/export/configs.py ExportConfig.container): FOCUS
// files for Power BI and billing adapters. Readers sign in with Entra ID (no shared keys).
resource exportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: 'usage-exports'
  properties: {
    publicAccess: 'None'
  }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = [for role in tableRoles: {
  parent: tableService
  name: '${tablePrefix}${role}'
}]

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: account
  name: 'default'
}

resource queues 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = [for queueName in queueNames: {
  parent: queueService
  name: queueName
}]

output name string = account.name
output resourceId string = account.id
output blobEndpoint string = account.properties.primaryEndpoints.blob
output queueEndpoint string = account.properties.primaryEndpoints.queue
output tableEndpoint string = account.properties.primaryEndpoints.table
output deploymentContainerName string = deploymentContainer.name

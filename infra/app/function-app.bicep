// The function app: a Flex Consumption (FC1) plan and a Linux Python 3.11 site that runs as the
// user-assigned identity. Storage is reached by identity (AzureWebJobsStorage__* service URIs,
// credential managedidentity), never by an account key; the deployment package is pulled from a
// blob container with the same identity.

@description('Function app (site) name.')
param name string

@description('Flex Consumption plan name.')
param planName string

@description('Azure region of the plan and the app.')
param location string

@description('Tags for the plan and the app.')
param tags object = {}

@description('azd service name (azure.yaml services.<name>): azd deploys to the app carrying this tag.')
param serviceName string

@description('Resource id of the user-assigned identity the app runs as.')
param identityId string

@description('Client id of that identity: picks it for storage, telemetry and token requests.')
param identityClientId string

@description('Storage account for host storage, usage tables and queues.')
param storageAccountName string

@description('Blob container (in that account) holding the deployment package.')
param deploymentContainerName string

@description('Application Insights component for host telemetry.')
param applicationInsightsName string

@description('The app\'s own settings (the ones shared/core/config.py reads); merged with the host wiring below.')
param appSettings object

@description('Base URL clients reach the usage API at (PUBLIC_BASE_URL: nextLink and Link headers); empty: https://{this app\'s default host name}. Set it when a custom domain or a gateway fronts the app.')
param publicBaseUrl string = ''

@description('Python version of the worker.')
@allowed([
  '3.11'
])
param pythonVersion string = '3.11'

@description('Memory per instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Upper bound on scale-out (Flex Consumption): caps parallel storage writes and commerce calls.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: name
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // @Microsoft.KeyVault(...) app settings resolve with this identity, not a system-assigned one.
    keyVaultReferenceIdentity: identityId
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }

  // On Flex Consumption the runtime lives in functionAppConfig: FUNCTIONS_WORKER_RUNTIME and
  // FUNCTIONS_EXTENSION_VERSION must not be app settings.
  resource settings 'config' = {
    name: 'appsettings'
    properties: union(appSettings, {
      // Host storage and the app's own storage clients, by identity (no keys). The host needs
      // blob (timer schedule monitor, locks) and queue (triggers on the work-item queues);
      // shared/core/config.py reads the table and queue URIs and the client id.
      AzureWebJobsStorage__credential: 'managedidentity'
      AzureWebJobsStorage__clientId: identityClientId
      AzureWebJobsStorage__blobServiceUri: storage.properties.primaryEndpoints.blob
      AzureWebJobsStorage__queueServiceUri: storage.properties.primaryEndpoints.queue
      AzureWebJobsStorage__tableServiceUri: storage.properties.primaryEndpoints.table
      // Host telemetry; Application Insights has local auth disabled, so ingestion uses the identity.
      APPLICATIONINSIGHTS_CONNECTION_STRING: applicationInsights.properties.ConnectionString
      APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identityClientId};Authorization=AAD'
      // query_usage builds nextLink/Link from this, never from the request's Host header.
      PUBLIC_BASE_URL: empty(publicBaseUrl) ? 'https://${site.properties.defaultHostName}' : publicBaseUrl
    })
  }
}

output name string = site.name
output resourceId string = site.id
output defaultHostName string = site.properties.defaultHostName

// Usage-and-chargeback pipeline: everything `azd up` provisions. A thin orchestrator: it names
// things, wires module outputs to module inputs and lists the app's own settings; each module
// under app/ owns one concern.

targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name; seeds the resource names and the resource group name.')
param environmentName string

@minLength(1)
@description('Region of every resource; it must offer the Flex Consumption plan.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@description('Object id of the deploying user (azd sets it), granted data access for debugging. Empty: none.')
param principalId string = ''

@description('App tables are "{prefix}{role}", usage tables "{prefix}u{subscription}" (USAGE_TABLE_PREFIX): a letter, then letters and digits, as table names are.')
@minLength(3)
@maxLength(24)
param tablePrefix string = 'usage'

// A deployment bills real money, so it never collects from the simulated fleet (a local-only
// part: the settings refuse USAGE_SOURCE=simulated in production, and the package does not
// contain it). The stamp's endpoint, provider subscription and audience have no defaults:
// azd asks for them (main.parameters.json), so nothing deploys half-configured.
@description('Where collect_usage reads usage from (USAGE_SOURCE): a real Azure Stack Hub stamp.')
@allowed([
  'azurestack'
])
param usageSource string = 'azurestack'

@minLength(1)
@description('The stamp\'s admin ARM endpoint (https), e.g. https://adminmanagement.local.azurestack.external (AZURESTACK_ADMIN_ARM_ENDPOINT).')
param azureStackAdminArmEndpoint string

@minLength(1)
@description('The stamp\'s default provider subscription id (AZURESTACK_PROVIDER_SUBSCRIPTION_ID).')
param azureStackProviderSubscriptionId string

@minLength(1)
@description('Token audience of the admin ARM endpoint: its metadata endpoint\'s authentication.audiences[0] (AZURESTACK_AUDIENCE).')
param azureStackAudience string

@description('USAGE_SOURCE=azurestack: how the stamp is called (AZURESTACK_AUTH): the managed identity (Entra ID stamps), or a service principal\'s secret from Key Vault (Entra ID or AD FS).')
@allowed([
  'managed_identity'
  'client_secret'
])
param azureStackAuth string = 'managed_identity'

@description('USAGE_SOURCE=azurestack, client_secret: https://login.microsoftonline.com (Entra ID) or the stamp\'s AD FS, e.g. https://adfs.local.azurestack.external (AZURESTACK_AUTHORITY).')
param azureStackAuthority string = ''

@description('USAGE_SOURCE=azurestack, client_secret: the directory tenant id, or "adfs" for AD FS (AZURESTACK_TENANT_ID).')
param azureStackTenantId string = ''

@description('USAGE_SOURCE=azurestack: the service principal\'s client id; empty uses the managed identity\'s client id (AZURESTACK_CLIENT_ID).')
param azureStackClientId string = ''

@description('USAGE_SOURCE=azurestack: read timeout of one request to the stamp, in seconds (AZURESTACK_TIMEOUT_SECONDS).')
@minValue(1)
@maxValue(600)
param azureStackTimeoutSeconds int = 120

@description('NCRONTAB (six fields, UTC) of the collect_usage timer (COLLECT_SCHEDULE).')
param collectSchedule string = '0 5 * * * *'

@description('NCRONTAB (six fields, UTC) of the export_usage timer (EXPORT_SCHEDULE): daily, after the day\'s last hour is collected.')
param exportSchedule string = '0 30 0 * * *'

@description('Seconds one in-process catch-up (python -m ops collect) may spend (COLLECT_TIME_BUDGET_SECONDS); the deployed collect_usage timer only plans work items.')
@minValue(1)
@maxValue(3600)
param collectTimeBudgetSeconds int = 420

@description('How far back a first run (no watermark yet) starts, in hours (COLLECT_LOOKBACK_HOURS).')
@minValue(1)
@maxValue(2160)
param collectLookbackHours int = 24

@description('NCRONTAB (six fields, UTC) of the rate_usage timer (RATING_SCHEDULE).')
param ratingSchedule string = '0 */10 * * * *'

@description('Seconds one rate_usage run may spend; below the host\'s functionTimeout (RATING_TIME_BUDGET_SECONDS).')
@minValue(1)
@maxValue(3600)
param ratingTimeBudgetSeconds int = 420

@description('NCRONTAB (six fields, UTC) of the observe_pipeline timer (STATUS_SCHEDULE): reads the objectives and records the gauges the alerts evaluate every 5 minutes.')
param statusSchedule string = '0 */5 * * * *'

@minLength(3)
@description('Email address the pipeline\'s alerts are sent to (docs/operations.md: one runbook per alert).')
param alertEmail string

@description('NCRONTAB (six fields, UTC) of the finalise_statements timer (STATEMENTS_SCHEDULE).')
param statementsSchedule string = '0 35 * * * *'

@description('Seconds one finalise_statements run may spend; below the host\'s functionTimeout (STATEMENTS_TIME_BUDGET_SECONDS).')
@minValue(1)
@maxValue(3600)
param statementsTimeBudgetSeconds int = 420

@description('Hours to wait after a reported hour ends before collecting it, so the stamp has aggregated it (COLLECT_DELAY_HOURS); Azure Stack Hub aggregates usage about once an hour.')
@minValue(0)
@maxValue(72)
param collectDelayHours int = 1

@description('Base URL clients reach the usage API at (PUBLIC_BASE_URL); empty: https://{the function app\'s default host name}.')
param publicBaseUrl string = ''

@description('Table partitions written in parallel (STORAGE_WRITE_PARALLELISM).')
@minValue(1)
@maxValue(64)
param storageWriteParallelism int = 8

@description('How table transactions and queries are sent (TABLES_TRANSPORT): empty chooses by the installed SDK versions (the fast direct path only on the versions it was proved on); "sdk" forces the SDK\'s own calls, "direct" the fast path.')
@allowed([
  ''
  'sdk'
  'direct'
])
param tablesTransport string = ''

@description('Queue of billing work items (report_to_azure trigger); "-poison" is appended for its poison queue. Lower-case letters, digits and single hyphens, starting and ending with a letter or digit.')
@minLength(3)
@maxLength(56)
param reportQueueName string = 'usage-to-report'

@description('Queue of collection work items (collect_slice trigger, COLLECT_QUEUE_NAME): one per source, reported hour and slice; "-poison" is appended for its poison queue. Named as reportQueueName.')
@minLength(3)
@maxLength(56)
param collectQueueName string = 'collect-work'

@description('Slices of subscriptions each reported hour of a source is cut into, one collection work item each (COLLECT_SLICES). An Azure Stack Hub slice reads the stamp\'s whole hour and keeps its own subscriptions, so raise it only for stamps whose writes dominate (docs/scale.md).')
@minValue(1)
@maxValue(64)
param collectSlices int = 1

@description('Usage sources (stamps) collected, comma-separated names (USAGE_STAMPS, e.g. \'east,west\'); empty: one source, the settings above. Each stamp\'s own values go in stampSettings.')
param usageStamps string = ''

@description('Each stamp\'s own settings, named STAMP_{NAME}__{SETTING} (NAME upper-cased), e.g. {"STAMP_EAST__AZURESTACK_ADMIN_ARM_ENDPOINT": "https://adminmanagement.east.example"}; secrets as Key Vault references (@Microsoft.KeyVault(SecretUri=...)). A stamp inherits every setting it does not set.')
param stampSettings object = {}

@description('Application ID URI and/or client id of the API app registration, comma-separated: the audiences query_usage accepts (AUTH_AUDIENCE).')
param authAudience string

@description('Issuers of accepted bearer tokens, comma-separated (AUTH_ISSUER): this tenant\'s Entra ID v2 and v1 issuers by default, so tokens of both versions pass.')
param authIssuer string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0,https://sts.windows.net/${tenant().tenantId}/'

@description('JWKS of the token issuer (AUTH_JWKS_URI).')
param authJwksUri string = '${environment().authentication.loginEndpoint}${tenant().tenantId}/discovery/v2.0/keys'

@description('App role that makes a caller the service admin (AUTH_ADMIN_ROLE).')
param authAdminRole string = 'UsageAdmin'

@description('Lifetime of query_usage continuation tokens in seconds (CONTINUATION_TOKEN_TTL_SECONDS).')
@minValue(60)
param continuationTokenTtlSeconds int = 3600

@description('Subscriptions per billing work item (REPORT_SUBSCRIPTIONS_PER_MESSAGE).')
@minValue(1)
@maxValue(1000)
param reportSubscriptionsPerMessage int = 50

@description('Commerce (Marketplace metering) endpoint report_to_azure posts to (COMMERCE_BASE_URL).')
param commerceBaseUrl string = 'https://marketplaceapi.microsoft.com'

@description('How report_to_azure gets commerce tokens (COMMERCE_AUTH): the managed identity, or an app registration\'s secret from Key Vault.')
@allowed([
  'managed_identity'
  'client_secret'
])
param commerceAuth string = 'managed_identity'

@description('App registration (client) id for COMMERCE_AUTH=client_secret; empty uses the managed identity\'s client id (COMMERCE_CLIENT_ID).')
param commerceClientId string = ''

@description('Hours after the commerce endpoint may have accepted an event before an absent or smaller daily row of GET usageEvents counts as proof that it did not (COMMERCE_PROCESSING_HORIZON_HOURS): the docs promise no processing latency, and a horizon shorter than the real one bills carried usage twice.')
@minValue(0)
@maxValue(168)
param commerceProcessingHorizonHours int = 24

@description('Billing resource id (e.g. the SaaS subscription) for subscriptions with no mapping of their own (BILLING_DEFAULT_RESOURCE_ID).')
param billingDefaultResourceId string

@description('Plan id billed for subscriptions with no mapping of their own (BILLING_DEFAULT_PLAN_ID).')
param billingDefaultPlanId string

@description('Operator changes to the catalogue\'s chargeable meters: "METERID=true;METERID=false" (BILLING_CHARGEABLE_OVERRIDES).')
param billingChargeableOverrides string = ''

@description('Client (application) id of the API app registration the portal signs in with (MSAL.js, authorization code + PKCE); empty: the portal says sign-in is not configured (PORTAL_CLIENT_ID).')
param portalClientId string = ''

@description('Entra ID authority the portal signs in at (PORTAL_AUTHORITY): this tenant by default.')
param portalAuthority string = '${environment().authentication.loginEndpoint}${tenant().tenantId}'

@secure()
@description('Commerce client secret, stored in Key Vault. Empty: the commerce client uses the managed identity.')
param commerceClientSecret string = ''

@secure()
@description('Azure Stack service principal secret, stored in Key Vault. Empty: the managed identity calls the stamp.')
param azureStackClientSecret string = ''

@secure()
@description('Key that signs query_usage continuation tokens, stored in Key Vault (azd reuses or generates it).')
param continuationTokenSigningKey string

// Bicep has no pattern decorator, so the names built from parameters are checked against
// the services' naming rules here (tests/unit/test_infra.py evaluates these functions on
// good and bad names): a bad one stops the template with fail() before anything deploys,
// instead of failing a table or queue halfway through a deployment.
@description('True when every character of value is one of allowed.')
func onlyCharacters(value string, allowed string) bool =>
  empty(filter(range(0, length(value)), i => !contains(allowed, substring(value, i, 1))))

@description('Table names: ^[A-Za-z][A-Za-z0-9]{2,62}$.')
func isTableName(name string) bool =>
  contains(range(3, 61), length(name)) && onlyCharacters(toLower(take(name, 1)), 'abcdefghijklmnopqrstuvwxyz') && onlyCharacters(toLower(name), 'abcdefghijklmnopqrstuvwxyz0123456789')

@description('Queue names: 3-63 lower-case letters, digits and hyphens, a letter or digit first and last, no two hyphens in a row.')
func isQueueName(name string) bool =>
  contains(range(3, 61), length(name)) && onlyCharacters(name, 'abcdefghijklmnopqrstuvwxyz0123456789-') && !(startsWith(name, '-') || endsWith(name, '-') || contains(name, '--'))

@description('A work-item queue\'s name: its own and its poison queue\'s ("{name}-poison") are queue names.')
func isWorkQueueName(name string) bool =>
  isQueueName(name) && isQueueName('${name}-poison')

@description('Resource group names: 1-90 letters, digits, hyphens, underscores, periods and parentheses, not ending with a period.')
func isResourceGroupName(name string) bool =>
  contains(range(1, 90), length(name)) && onlyCharacters(toLower(name), 'abcdefghijklmnopqrstuvwxyz0123456789-_.()') && !endsWith(name, '.')

// The longest table name is "{prefix}u{subscription id without hyphens}": 24 + 1 + 32.
var checkedTablePrefix = isTableName(tablePrefix) ? tablePrefix : fail('tablePrefix must be a letter, then letters and digits (3-24): table names are ^[A-Za-z][A-Za-z0-9]{2,62}$.')
var checkedReportQueueName = isWorkQueueName(reportQueueName) ? reportQueueName : fail('reportQueueName must be lower-case letters, digits and single hyphens, starting and ending with a letter or digit (3-56).')
var checkedCollectQueueName = isWorkQueueName(collectQueueName) ? collectQueueName : fail('collectQueueName must be lower-case letters, digits and single hyphens, starting and ending with a letter or digit (3-56).')
var resourceGroupName = isResourceGroupName('rg-${environmentName}') ? 'rg-${environmentName}' : fail('environmentName must be letters, digits, hyphens, underscores, periods and parentheses, not ending with a period (it names the resource group).')

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-api-${resourceToken}'

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
}

module identity 'app/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: 'id-api-${resourceToken}'
    location: location
    tags: tags
  }
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    tablePrefix: checkedTablePrefix
    deploymentContainerName: 'app-package-${resourceToken}'
    reportQueueName: checkedReportQueueName
    collectQueueName: checkedCollectQueueName
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    location: location
    tags: tags
    alertEmail: alertEmail
  }
}

module keyVault 'app/keyvault.bicep' = {
  name: 'keyvault'
  scope: rg
  params: {
    name: 'kv-${resourceToken}'
    location: location
    tags: tags
    commerceClientSecret: commerceClientSecret
    azureStackClientSecret: azureStackClientSecret
    continuationTokenSigningKey: continuationTokenSigningKey
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    keyVaultName: keyVault.outputs.name
    managedIdentityPrincipalId: identity.outputs.principalId
    userPrincipalId: principalId
  }
}

module api 'app/function-app.bicep' = {
  name: 'api'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'api'
    identityId: identity.outputs.resourceId
    identityClientId: identity.outputs.clientId
    storageAccountName: storage.outputs.name
    deploymentContainerName: storage.outputs.deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    publicBaseUrl: publicBaseUrl
    // The settings shared/core/config.py reads (the storage and telemetry wiring is added by the
    // module). tests/unit/test_infra.py fails when this list and the code disagree.
    appSettings: union(stampSettings, {
      // Production mode: no emulator defaults, every production-only setting required.
      APP_MODE: 'production'
      // collect_usage: where usage comes from, and the stamps when there are several
      // (collect_usage plans one work item per stamp, hour and slice on the collection
      // queue; collect_slice collects each).
      USAGE_SOURCE: usageSource
      USAGE_STAMPS: usageStamps
      COLLECT_QUEUE_NAME: checkedCollectQueueName
      COLLECT_SLICES: string(collectSlices)
      // collect_usage, USAGE_SOURCE=azurestack: the stamp and the identity that reads it.
      AZURESTACK_ADMIN_ARM_ENDPOINT: azureStackAdminArmEndpoint
      AZURESTACK_PROVIDER_SUBSCRIPTION_ID: azureStackProviderSubscriptionId
      AZURESTACK_AUDIENCE: azureStackAudience
      AZURESTACK_AUTH: azureStackAuth
      AZURESTACK_AUTHORITY: azureStackAuthority
      AZURESTACK_TENANT_ID: azureStackTenantId
      AZURESTACK_CLIENT_ID: empty(azureStackClientId) ? identity.outputs.clientId : azureStackClientId
      AZURESTACK_CLIENT_SECRET: empty(azureStackClientSecret) ? '' : keyVault.outputs.azureStackClientSecretReference
      AZURESTACK_TIMEOUT_SECONDS: string(azureStackTimeoutSeconds)
      // collect_usage, query_usage, report_to_azure: the usage table names.
      USAGE_TABLE_PREFIX: checkedTablePrefix
      // collect_usage timer schedule (%COLLECT_SCHEDULE% in collect_usage/function.json).
      COLLECT_SCHEDULE: collectSchedule
      // export_usage timer schedule (%EXPORT_SCHEDULE% in export_usage/function.json).
      EXPORT_SCHEDULE: exportSchedule
      // collect_usage catch-up: time budget per run and the first run's lookback.
      COLLECT_TIME_BUDGET_SECONDS: string(collectTimeBudgetSeconds)
      COLLECT_LOOKBACK_HOURS: string(collectLookbackHours)
      // collect_usage: an hour is collected once the stamp has finished it.
      COLLECT_DELAY_HOURS: string(collectDelayHours)
      // collect_usage: partitions written in parallel.
      STORAGE_WRITE_PARALLELISM: string(storageWriteParallelism)
      // rate_usage timer (%RATING_SCHEDULE% in its function.json) and its budget.
      RATING_SCHEDULE: ratingSchedule
      RATING_TIME_BUDGET_SECONDS: string(ratingTimeBudgetSeconds)
      // observe_pipeline timer (%STATUS_SCHEDULE%): the objectives' gauges and history.
      STATUS_SCHEDULE: statusSchedule
      // Every function: how table transactions and queries are sent (shared/storage/transport).
      TABLES_TRANSPORT: tablesTransport
      // finalise_statements timer (%STATEMENTS_SCHEDULE% in its function.json) and its budget.
      STATEMENTS_SCHEDULE: statementsSchedule
      STATEMENTS_TIME_BUDGET_SECONDS: string(statementsTimeBudgetSeconds)
      // query_usage: bearer-token validation (Entra ID) and the admin app role.
      AUTH_ISSUER: authIssuer
      AUTH_AUDIENCE: authAudience
      AUTH_JWKS_URI: authJwksUri
      AUTH_ADMIN_ROLE: authAdminRole
      // query_usage: continuation tokens are signed with a Key Vault secret.
      CONTINUATION_TOKEN_KEY: keyVault.outputs.continuationTokenSigningKeyReference
      CONTINUATION_TOKEN_TTL_SECONDS: string(continuationTokenTtlSeconds)
      // collect_usage enqueues and report_to_azure consumes billing work items here.
      USAGE_QUEUE_NAME: checkedReportQueueName
      REPORT_SUBSCRIPTIONS_PER_MESSAGE: string(reportSubscriptionsPerMessage)
      // report_to_azure: the commerce endpoint and its credentials.
      COMMERCE_BASE_URL: commerceBaseUrl
      COMMERCE_AUTH: commerceAuth
      COMMERCE_CLIENT_ID: empty(commerceClientId) ? identity.outputs.clientId : commerceClientId
      COMMERCE_TENANT_ID: tenant().tenantId
      COMMERCE_CLIENT_SECRET: empty(commerceClientSecret) ? '' : keyVault.outputs.commerceClientSecretReference
      // report_to_azure: how long the endpoint's daily rows may lag what it accepted.
      COMMERCE_PROCESSING_HORIZON_HOURS: string(commerceProcessingHorizonHours)
      // report_to_azure: where unmapped subscriptions are billed, and the chargeable meters.
      BILLING_DEFAULT_RESOURCE_ID: billingDefaultResourceId
      BILLING_DEFAULT_PLAN_ID: billingDefaultPlanId
      BILLING_CHARGEABLE_OVERRIDES: billingChargeableOverrides
      // portal: Entra ID sign-in in the browser (the local "sign in as" endpoint is local-only).
      PORTAL_CLIENT_ID: portalClientId
      PORTAL_AUTHORITY: portalAuthority
    })
  }
  // Start the app only once its identity may read storage, telemetry and Key Vault.
  dependsOn: [
    rbac
  ]
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = api.outputs.name
output SERVICE_API_NAME string = api.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
// main.parameters.json reads the signing key back from this vault on later `azd provision` runs.
output AZURE_KEY_VAULT_NAME string = keyVault.outputs.name
output AZURE_KEY_VAULT_ENDPOINT string = keyVault.outputs.uri

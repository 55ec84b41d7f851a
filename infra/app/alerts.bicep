// Operators hear when the pipeline is behind (docs/operations.md; design invariant 13): an
// action group that emails them, a log alert per objective's breach (the observe_pipeline
// timer records usage.objective.breached every 5 minutes), one when that timer falls
// silent (no observation: nothing could say "breached"), one on the API's 5xx share and
// one on its p95 latency, and a workbook of the metrics the code emits.
// tests/unit/test_telemetry_catalogue.py ties every metric named here to one the code
// emits (shared/core/telemetry.py) and every objective to an alert.

@description('Application Insights component the app\'s metrics go to.')
param applicationInsightsName string

@description('Azure region of the alert rules and the workbook.')
param location string

@description('Tags for everything here.')
param tags object = {}

@minLength(3)
@description('Email address the alerts are sent to (the action group\'s receiver).')
param alertEmail string

@description('Short name of the action group (shown in SMS and email subjects; 12 characters at most).')
@maxLength(12)
param actionGroupShortName string = 'usagepipe'

resource applicationInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource operators 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-usage-operators'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: actionGroupShortName
    enabled: true
    emailReceivers: [
      {
        name: 'operators'
        emailAddress: alertEmail
        useCommonAlertSchema: true
      }
    ]
  }
}

// One rule per objective measured from stored state; the runbook of each is in
// docs/operations.md under the rule's name.
var objectiveRules = [
  {
    objective: 'freshness'
    severity: 1
    description: 'A stamp\'s collectable hours are not stored within 30 minutes (usage.collection.lag).'
  }
  {
    objective: 'billing-latency'
    severity: 1
    description: 'Stored hours have chargeable events not settled 90 minutes after becoming collectable (usage.billing.latency).'
  }
  {
    objective: 'correctness'
    severity: 1
    description: 'The latest reconciliation found differences, or an event has been unresolved for over a day (usage.reconciliation.differences, usage.billing.unresolved).'
  }
  {
    objective: 'coverage'
    severity: 2
    description: 'A subscription reported usage that no stored hour holds (usage.collection.quarantined).'
  }
  {
    objective: 'exports'
    severity: 3
    description: 'An export\'s latest run is more than 26 hours old (usage.export.age).'
  }
  {
    objective: 'statements'
    severity: 2
    description: 'A closed month\'s statements are not final by the 2nd day after it closed (usage.statements.overdue).'
  }
]

resource objectiveAlerts 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for rule in objectiveRules: {
  name: 'usage-${rule.objective}-breached'
  location: location
  tags: tags
  properties: {
    displayName: 'usage pipeline: ${rule.objective} breached'
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == \'usage.objective.breached\' | where tostring(customDimensions[\'objective\']) == \'${rule.objective}\' | summarize breached = max(value) by bin(timestamp, 5m)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'breached'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}]

// The observer itself: no observation for 30 minutes means no objective can be judged.
resource observerSilent 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'usage-observer-silent'
  location: location
  tags: tags
  properties: {
    displayName: 'usage pipeline: no observation of the objectives'
    description: 'observe_pipeline recorded no usage.objective.breached for 30 minutes: the timer, its settings or its storage access is broken.'
    severity: 1
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT30M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == \'usage.objective.breached\' | summarize observations = count()'
          timeAggregation: 'Total'
          metricMeasureColumn: 'observations'
          operator: 'LessThan'
          threshold: 1
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}

// The API's availability objective: at most 0.1% of answers 5xx (503 counts against it).
resource api5xx 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'usage-api-5xx'
  location: location
  tags: tags
  properties: {
    displayName: 'usage pipeline: API 5xx share above 0.1%'
    description: 'More than 0.1% of API answers in the last hour were 5xx, 503 included (usage.api.requests by status).'
    severity: 2
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == \'usage.api.requests\' | extend status = toint(customDimensions[\'status\']) | summarize answers = sum(valueSum), failed = sumif(valueSum, status >= 500) | where answers >= 20 | extend failedShare = failed / answers'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failedShare'
          operator: 'GreaterThan'
          threshold: json('0.001')
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}

// The API's latency objective: p95 within 2 s. Application Insights keeps a histogram's sum,
// count, min and max only, so the percentile comes from the host's per-request telemetry
// (requests) of the two API functions; usage.api.duration's mean and max are on the workbook.
resource apiLatency 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: 'usage-api-latency'
  location: location
  tags: tags
  properties: {
    displayName: 'usage pipeline: API p95 above 2 s'
    description: 'The 95th percentile of API answers in the last hour took more than 2 seconds.'
    severity: 3
    enabled: true
    scopes: [
      applicationInsights.id
    ]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: 'requests | where operation_Name in (\'query_usage\', \'pipeline_status\') | summarize answers = count(), p95 = percentile(duration, 95) | where answers >= 20'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'p95'
          operator: 'GreaterThan'
          threshold: 2000
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        operators.id
      ]
    }
  }
}

// The workbook: one chart per metric family, over the last 7 days.
var charts = [
  {
    title: 'Collection lag per stamp (min)'
    query: 'customMetrics | where name == \'usage.collection.lag\' | extend stamp = tostring(customDimensions[\'stamp\']) | summarize lag = max(value) by stamp, bin(timestamp, 15m) | render timechart'
  }
  {
    title: 'Rows stored and quarantined per hour'
    query: 'customMetrics | where name in (\'usage.collection.rows\', \'usage.collection.quarantined\') | summarize rows = sum(valueSum) by name, bin(timestamp, 1h) | render columnchart'
  }
  {
    title: 'Billing latency (min) and events by outcome'
    query: 'customMetrics | where name in (\'usage.billing.latency\', \'usage.billing.events\') | extend series = iff(name == \'usage.billing.events\', strcat(\'events \', tostring(customDimensions[\'outcome\'])), \'latency (min)\') | summarize value = max(valueSum) by series, bin(timestamp, 15m) | render timechart'
  }
  {
    title: 'Pending, unresolved and carried events'
    query: 'customMetrics | where name in (\'usage.billing.pending\', \'usage.billing.unresolved\', \'usage.billing.carry_backlog\', \'usage.billing.carry_age\') | summarize value = max(value) by name, bin(timestamp, 15m) | render timechart'
  }
  {
    title: 'Poison queue depths'
    query: 'customMetrics | where name == \'usage.queue.poison_depth\' | extend queue = tostring(customDimensions[\'queue\']) | summarize depth = max(value) by queue, bin(timestamp, 15m) | render timechart'
  }
  {
    title: 'Reconciliation differences by kind'
    query: 'customMetrics | where name == \'usage.reconciliation.differences\' | extend kind = tostring(customDimensions[\'kind\']) | summarize differences = max(value) by kind, bin(timestamp, 1h) | where differences > 0 or kind == \'total\' | render timechart'
  }
  {
    title: 'Exports: age of the latest run (h) and rows written'
    query: 'customMetrics | where name in (\'usage.export.age\', \'usage.export.rows\') | extend export = tostring(customDimensions[\'export\']) | summarize value = max(valueSum) by series = strcat(name, \' \', export), bin(timestamp, 1h) | render timechart'
  }
  {
    title: 'Statements: final through (YYYYMM) and hours overdue'
    query: 'customMetrics | where name in (\'usage.statements.final_through\', \'usage.statements.overdue\') | summarize value = max(value) by name, bin(timestamp, 1h) | render timechart'
  }
  {
    title: 'Objectives breached (1 = breached)'
    query: 'customMetrics | where name == \'usage.objective.breached\' | extend objective = tostring(customDimensions[\'objective\']) | summarize breached = max(value) by objective, bin(timestamp, 15m) | render timechart'
  }
  {
    title: 'API answers by route and status'
    query: 'customMetrics | where name == \'usage.api.requests\' | extend series = strcat(tostring(customDimensions[\'route\']), \' \', tostring(customDimensions[\'status\'])) | summarize answers = sum(valueSum) by series, bin(timestamp, 1h) | render columnchart'
  }
  {
    title: 'API answer time per route: mean and max (s)'
    query: 'customMetrics | where name == \'usage.api.duration\' | extend route = tostring(customDimensions[\'route\']) | summarize mean = sum(valueSum) / sum(valueCount), slowest = max(valueMax) by route, bin(timestamp, 1h) | render timechart'
  }
]

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, applicationInsights.id, 'usage-pipeline-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'Usage pipeline: objectives and metrics'
    category: 'workbook'
    sourceId: applicationInsights.id
    serializedData: string({
      version: 'Notebook/1.0'
      items: [for (chart, index) in charts: {
        type: 3
        name: 'chart${index}'
        content: {
          version: 'KqlItem/1.0'
          title: chart.title
          query: chart.query
          queryType: 0
          resourceType: 'microsoft.insights/components'
          timeContext: {
            durationMs: 604800000
          }
          size: 0
        }
      }]
    })
  }
}

output actionGroupId string = operators.id
output workbookId string = workbook.id

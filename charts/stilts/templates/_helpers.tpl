{{/* Names and labels, in one place. */}}
{{- define "stilts.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "stilts.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "stilts.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{ include "stilts.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "stilts.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stilts.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "stilts.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "stilts.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* The job backend's resource: group, plural, the leader pod's label. */}}
{{- define "stilts.backendGroup" -}}
{{- if eq .Values.jobBackend "trainjob" }}trainer.kubeflow.org{{ else }}kubeflow.org{{ end -}}
{{- end -}}
{{- define "stilts.backendPlural" -}}
{{- if eq .Values.jobBackend "trainjob" }}trainjobs{{ else }}pytorchjobs{{ end -}}
{{- end -}}

{{/* The rules the operator needs in a namespace it watches. tests/chart checks them against the
     API calls in operator/stilts/operator.py, for each job backend. */}}
{{- define "stilts.namespacedRules" -}}
- apiGroups: ["stilts.dev"]
  resources: ["transferexperiments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["stilts.dev"]
  resources: ["transferexperiments/status"]
  verbs: ["patch"]
# Children set blockOwnerDeletion on their owner reference: clusters that enforce OwnerReferencesPermission
# (OpenShift, for one) require update on the owner's finalizers for that.
- apiGroups: ["stilts.dev"]
  resources: ["transferexperiments/finalizers"]
  verbs: ["update"]
- apiGroups: [{{ include "stilts.backendGroup" . | quote }}]
  resources: [{{ include "stilts.backendPlural" . | quote }}]
  verbs: ["get", "list", "watch", "create", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "create", "update", "patch"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["create"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# An evaluate job's per-item results are the last lines of its leader's log (stilts_contract/items.py).
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
{{- end -}}

{{/* Labels on every object: the kustomize base's, plus Helm's own. */}}
{{- define "trustmap.labels" -}}
app.kubernetes.io/name: trustmap
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The agent pods' selector: fixed, as a DaemonSet's selector cannot change. */}}
{{- define "trustmap.selector" -}}
app.kubernetes.io/name: trustmap
app.kubernetes.io/component: agent
{{- end -}}

{{- define "trustmap.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}{{ with .Values.image.digest }}@{{ . }}{{ end }}
{{- end -}}

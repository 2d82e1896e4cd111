{{- define "triggers.name" -}}
{{- printf "%s" .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "triggers.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "triggers.labels" -}}
app.kubernetes.io/name: kafka-agent-triggers
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "triggers.selector" -}}
app.kubernetes.io/name: kafka-agent-triggers
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The environment every component shares: Kafka, topics, secrets. */}}
{{- define "triggers.env" -}}
- name: TRIGGERS_KAFKA_BOOTSTRAP
  value: {{ .Values.kafka.bootstrap | quote }}
- name: TRIGGERS_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.securityProtocol | quote }}
- name: TRIGGERS_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.saslMechanism | quote }}
{{- if .Values.kafka.credentialsSecret }}
- name: TRIGGERS_KAFKA_SASL_USERNAME
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.credentialsSecret | quote }}, key: username}}
- name: TRIGGERS_KAFKA_SASL_PASSWORD
  valueFrom: {secretKeyRef: {name: {{ .Values.kafka.credentialsSecret | quote }}, key: password}}
{{- end }}
{{- if .Values.kafka.caSecret }}
- name: TRIGGERS_KAFKA_SSL_CA_LOCATION
  value: /etc/triggers/kafka-ca/ca.pem
{{- end }}
- name: TRIGGERS_TOPIC_PREFIX
  value: {{ .Values.topics.prefix | quote }}
- name: TRIGGERS_TOPIC_PARTITIONS
  value: {{ .Values.topics.partitions | quote }}
- name: TRIGGERS_TOPIC_REPLICATION_FACTOR
  value: {{ .Values.topics.replicationFactor | quote }}
- name: TRIGGERS_APP_ID
  value: {{ include "triggers.name" . | quote }}
- name: TRIGGERS_HTTP_HOST
  value: "0.0.0.0"
- name: TRIGGERS_LOG_FORMAT
  value: {{ .Values.logFormat | quote }}
{{- if .Values.apiKeysSecret }}
- name: TRIGGERS_API_KEYS
  valueFrom: {secretKeyRef: {name: {{ .Values.apiKeysSecret | quote }}, key: api-keys}}
{{- end }}
{{- range $name, $value := .Values.extraEnv }}
- name: {{ $name }}
  value: {{ $value | quote }}
{{- end }}
{{- end -}}

{{- define "triggers.envFrom" -}}
{{- range .Values.envFromSecrets }}
- secretRef: {name: {{ . | quote }}}
{{- end }}
{{- end -}}

{{- define "triggers.caVolume" -}}
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  secret: {secretName: {{ .Values.kafka.caSecret | quote }}}
{{- end }}
{{- end -}}

{{- define "triggers.caMount" -}}
{{- if .Values.kafka.caSecret }}
- name: kafka-ca
  mountPath: /etc/triggers/kafka-ca
  readOnly: true
{{- end }}
{{- end -}}

{{/*
Names are fixed (K8S-DESIGN): one Remora per cluster, whose webhook and
ClusterRole are cluster-wide.
*/}}

{{/* Standard labels of every object; $component names the part. */}}
{{- define "remora.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: remora
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* The labels the control plane's Deployment, Services and PDB select on. */}}
{{- define "remora.selectorLabels" -}}
app.kubernetes.io/name: remora-control-plane
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* An image reference from {repository, tag}; the tag defaults to appVersion. */}}
{{- define "remora.image" -}}
{{- printf "%s:%s" .image.repository (.image.tag | default .root.Chart.AppVersion) -}}
{{- end }}

{{/* The control plane's address as injected proxies dial it. */}}
{{- define "remora.controlPlaneAddress" -}}
{{- printf "remora-control-plane.%s.svc:8086" .Release.Namespace -}}
{{- end }}

{{/*
PKCS#8 ("BEGIN PRIVATE KEY") PEM of an ECDSA P-256 key given as the SEC1
PEM ("BEGIN EC PRIVATE KEY") that `genPrivateKey "ecdsa"` returns: the
control plane's CA takes PKCS#8 only. Go writes a P-256 SEC1 key as exactly
121 bytes (the curve in [0], the public key in [1]), so the PKCS#8 wrapper
is constant: SEQUENCE { INTEGER 0, AlgorithmIdentifier { id-ecPublicKey,
prime256v1 }, OCTET STRING (121 bytes) { the SEC1 key } }.
*/}}
{{- define "remora.pkcs8" -}}
{{- $sec1 := regexReplaceAll "-----[A-Z ]+-----|\\s" . "" | b64dec -}}
{{- if ne (len $sec1) 121 -}}
{{- fail "remora.pkcs8: expected a 121-byte ECDSA P-256 SEC1 key" -}}
{{- end -}}
{{- $prefix := "\x30\x81\x93\x02\x01\x00\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01\x06\x08\x2a\x86\x48\xce\x3d\x03\x01\x07\x04\x79" -}}
{{- $b64 := printf "%s%s" $prefix $sec1 | b64enc -}}
-----BEGIN PRIVATE KEY-----
{{ regexFindAll ".{1,64}" $b64 -1 | join "\n" }}
-----END PRIVATE KEY-----
{{ end }}

{{/*
A certificate authority and one serving certificate under it, as base64
strings {ca, crt, key} (ECDSA P-256 keys, PKCS#8). Reused from the Secret
.secret of the release namespace when it holds all three (upgrades keep
their certificates), else new. Arguments: root, secret, cn, dns (list).
*/}}
{{- define "remora.servingCert" -}}
{{- $s := lookup "v1" "Secret" .root.Release.Namespace .secret -}}
{{- $ca := dig "data" "ca.crt" "" $s -}}
{{- $crt := dig "data" "tls.crt" "" $s -}}
{{- $key := dig "data" "tls.key" "" $s -}}
{{- if not (and $ca $crt $key) -}}
{{- $days := int .root.Values.tls.validityDays -}}
{{- $caKey := genPrivateKey "ecdsa" -}}
{{- $authority := genCAWithKey (printf "%s CA" .cn) $days $caKey -}}
{{- $leafKey := genPrivateKey "ecdsa" -}}
{{- $leaf := genSignedCertWithKey .cn nil .dns $days $authority $leafKey -}}
{{- $ca = $authority.Cert | b64enc -}}
{{- $crt = $leaf.Cert | b64enc -}}
{{- $key = include "remora.pkcs8" $leafKey | b64enc -}}
{{- end -}}
{{- dict "ca" $ca "crt" $crt "key" $key | toJson -}}
{{- end }}

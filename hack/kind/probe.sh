# Run by `scripts/kind-node-image check` in a pod on each node (bash of the
# kind-tools image): pod-to-pod across nodes, Services, cluster DNS.
# Env: DNS_POD, DNS_NODE (a CoreDNS pod and its node), DNS_SVC, API_SVC.
set -u
fail=0
try() {
  local what=$1 out
  shift
  if out=$(timeout 10 "$@" 2>&1); then
    echo "ok   $what: $out"
  else
    echo "FAIL $what: $out"
    fail=1
  fi
}
http() {
  exec 3<>"/dev/tcp/$1/$2" && printf 'GET %s HTTP/1.0\r\n\r\n' "$3" >&3 && head -1 <&3 | tr -d '\r'
}
try "pod->pod $DNS_POD:8080 (CoreDNS on $DNS_NODE)" bash -c "$(declare -f http); http $DNS_POD 8080 /health"
try "service kube-dns $DNS_SVC:9153" bash -c "$(declare -f http); http $DNS_SVC 9153 /metrics"
try "service kubernetes $API_SVC:443 (TCP)" bash -c "exec 3<>/dev/tcp/$API_SVC/443 && echo connected"
try "DNS kubernetes.default" getent hosts kubernetes.default.svc.cluster.local
exit $fail

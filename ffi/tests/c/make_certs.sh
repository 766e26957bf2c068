#!/usr/bin/env bash
# A throwaway development PKI made with the openssl CLI at test time:
# a CA, and per node an EC P-256 key and a certificate whose DNS
# SubjectAltName is the node name (serverAuth + clientAuth), as tidelog's
# mutual TLS expects. Usage: make_certs.sh <out dir> <node>...
set -euo pipefail
out=$1
shift
mkdir -p "$out"
cd "$out"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout ca.key -out ca.pem -days 2 -subj "/CN=tidelog C test CA" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
for node in "$@"; do
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$node.key" -out "$node.csr" -subj "/CN=$node" 2>/dev/null
    printf '%s\n' \
        "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" \
        "extendedKeyUsage=serverAuth,clientAuth" \
        "subjectAltName=DNS:$node" \
        "authorityKeyIdentifier=keyid" \
        "subjectKeyIdentifier=hash" > "$node.ext"
    openssl x509 -req -in "$node.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -out "$node.pem" -days 2 -extfile "$node.ext" 2>/dev/null
    rm -f "$node.csr" "$node.ext"
done
chmod 600 ./*.key

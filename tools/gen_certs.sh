#!/bin/sh
# Generate test TLS material for the local IMM server's --tls DIR (server/imm_server).
#
#   tools/gen_certs.sh DIR
#
# Writes into DIR (regenerating whatever is there):
#   ca.crt, ca.key            a test CA
#   server.crt, server.key    signed by that CA: CN=localhost, SAN DNS:localhost,
#                             DNS:127.0.0.1 (for ngx_lua, see below) and
#                             IP:127.0.0.1, EKU serverAuth, valid 30 days
#   other-ca.crt, other-ca.key  a second CA that did NOT sign the server cert, for
#                             tests that expect verification to fail
# Keys are EC P-256: fast to make and accepted everywhere.  Needs only the openssl CLI.
# Silent on success; on failure prints openssl's own message.
set -eu

if [ $# -ne 1 ]; then
    echo "usage: $0 DIR" >&2
    exit 2
fi
dir=$1
mkdir -p "$dir"

# Build everything in a scratch directory and move it into place at the end, so a
# failure half-way leaves the previous set intact rather than a mismatched mix.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umask 077    # keys are readable by the owner only

# Run an openssl command quietly; show its output only if it fails.
run() {
    if ! "$@" >"$work/log" 2>&1; then
        cat "$work/log" >&2
        exit 1
    fi
}

# Our own config, so the result does not depend on the system's openssl.cnf
# (whose defaults, e.g. for "req -x509" extensions, differ between distributions).
cat >"$work/openssl.cnf" <<'EOF'
[req]
distinguished_name = dn
prompt = no
[dn]
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
# DNS:127.0.0.1 too: ngx_lua checks names with X509_check_host, which reads
# DNS names only, while libcurl matches IP literals against IP names.
subjectAltName = DNS:localhost, DNS:127.0.0.1, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

new_key() {
    run openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"
}

# A self-signed CA: new_ca NAME "COMMON NAME"
new_ca() {
    new_key "$work/$1.key"
    run openssl req -config "$work/openssl.cnf" -new -x509 -sha256 -days 30 \
        -key "$work/$1.key" -subj "/O=imm tests/CN=$2" -extensions ca_ext -out "$work/$1.crt"
}

new_ca ca "imm-local test CA"
new_ca other-ca "imm-local other test CA"

new_key "$work/server.key"
run openssl req -config "$work/openssl.cnf" -new -sha256 \
    -key "$work/server.key" -subj "/O=imm tests/CN=localhost" -out "$work/server.csr"
run openssl x509 -req -sha256 -days 30 -in "$work/server.csr" \
    -CA "$work/ca.crt" -CAkey "$work/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
    -extfile "$work/openssl.cnf" -extensions server_ext -out "$work/server.crt"

# Certificates are public; only the keys stay owner-only.
chmod 644 "$work/ca.crt" "$work/other-ca.crt" "$work/server.crt"
for f in ca.crt ca.key server.crt server.key other-ca.crt other-ca.key; do
    mv -f "$work/$f" "$dir/$f"
done

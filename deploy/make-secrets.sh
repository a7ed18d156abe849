#!/usr/bin/env bash
# Create the secrets compose.yaml needs, once: master key, JWT signing secret, database password.
# They never leave this machine; keep deploy/secrets/ and .env out of version control and backups
# that are less protected than the database itself.
set -euo pipefail
cd "$(dirname "$0")/.."
# The directory is private (0700); the files are 0644 because compose bind-mounts them into
# containers whose user (uid 10001) is not the owner here.
umask 022
mkdir -p deploy/secrets
chmod 700 deploy/secrets
[ -s deploy/secrets/master.key ] || python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())' > deploy/secrets/master.key
[ -s deploy/secrets/jwt.secret ] || python3 -c 'import secrets; print(secrets.token_urlsafe(48))' > deploy/secrets/jwt.secret
if ! grep -qs '^POSTGRES_PASSWORD=' .env; then
  (umask 077; touch .env)
  echo "POSTGRES_PASSWORD=$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')" >> .env
fi
echo "secrets in deploy/secrets/, database password in .env"

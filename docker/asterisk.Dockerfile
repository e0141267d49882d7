# syntax=docker/dockerfile:1
#
# Asterisk 23 with the contact-center configuration from asterisk_conf/.
#
# Base image: andrius/asterisk, a well-known community image that builds
# Asterisk from the release sources on Debian trixie; this tag is Asterisk
# 23.4.1, the version the project's protocol traces were recorded with.
# (Debian ships an asterisk package only in unstable, not in a release.)
#
# Build from the repository root:
#   docker build -f docker/asterisk.Dockerfile -t ivr-asterisk .
FROM andrius/asterisk:23.4.1_debian-trixie

USER root

# The base image has no prompts and no music on hold.  Callers must hear the
# queue announcements and music while they wait, not silence: Debian's
# packages (English and Russian prompts, the default music class).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        asterisk-core-sounds-en asterisk-core-sounds-en-gsm \
        asterisk-core-sounds-ru asterisk-core-sounds-ru-gsm \
        asterisk-moh-opsound-gsm \
    && rm -rf /var/lib/apt/lists/* \
    && rm -rf /var/lib/asterisk/moh \
    && ln -s /usr/share/asterisk/moh /var/lib/asterisk/moh

# The shipped configuration stays here; the start script installs it into
# /etc/asterisk (a volume of the base image, which would otherwise keep an
# older copy across rebuilds).
COPY asterisk_conf/extensions.conf asterisk_conf/queues.conf \
     asterisk_conf/manager.conf asterisk_conf/pjsip.conf /usr/share/ivr-asterisk/

# - AMI listens on the container's network; manager.conf still lets only
#   loopback and the addresses in IVR_AMI_PERMIT log in;
# - a small RTP port range, published by compose.yaml.
RUN sed -i 's/^bindaddr=127\.0\.0\.1$/bindaddr=0.0.0.0/' /usr/share/ivr-asterisk/manager.conf \
    && grep -q '^bindaddr=0\.0\.0\.0$' /usr/share/ivr-asterisk/manager.conf \
    && printf '[general]\nrtpstart=10000\nrtpend=10199\n' > /usr/share/ivr-asterisk/rtp.conf

# At start:
# 1. install the shipped configuration, then the site's own files from
#    /etc/ivr-asterisk/site/*.conf over it (pjsip.conf with the real trunk
#    and passwords: they belong to the site, never to the image);
# 2. refuse to run with the sample CHANGE_ME passwords;
# 3. write the files the configuration includes: the AMI secret (from the
#    Docker secret) and the server's addresses (from the environment);
# 4. hand over to the base image's entrypoint (uid/gid mapping) and Asterisk.
# Environment:
#   IVR_SERVER           host:port of the FastAGI server
#   IVR_AMI_PERMIT       addresses (or address/mask) allowed to log in to AMI
#   IVR_AMI_SECRET_FILE  default /run/secrets/ami_secret
#   IVR_ALLOW_PLACEHOLDER_PASSWORDS=yes   run with the sample passwords
#                        (a closed lab only)
COPY --chmod=755 <<'EOF' /usr/local/bin/ivr-asterisk-start
#!/bin/sh
set -eu
conf=/etc/asterisk

cp /usr/share/ivr-asterisk/*.conf "$conf/"
for site_file in /etc/ivr-asterisk/site/*.conf; do
    if [ -f "$site_file" ]; then cp "$site_file" "$conf/"; fi
done
# the sample AEL / Lua dialplans would add demo contexts next to ours
rm -f "$conf/extensions.ael" "$conf/extensions.lua"

if grep -q 'CHANGE_ME' "$conf/pjsip.conf" \
        && [ "${IVR_ALLOW_PLACEHOLDER_PASSWORDS:-no}" != "yes" ]; then
    echo "pjsip.conf still holds CHANGE_ME placeholders: put the site's pjsip.conf" \
         "in /etc/ivr-asterisk/site/ (see docker/README.md)" >&2
    exit 1
fi

secret_file="${IVR_AMI_SECRET_FILE:-/run/secrets/ami_secret}"
if [ -s "$secret_file" ]; then
    secret="$(head -n 1 "$secret_file" | tr -d '\r\n')"
    case "$secret" in
        '' | *[!A-Za-z0-9._~+/=-]*)
            echo "$secret_file: use letters, digits and ._~+/=- only" >&2
            exit 1 ;;
    esac
    (
        umask 077
        printf 'secret=%s\n' "$secret"
        for address in ${IVR_AMI_PERMIT:-}; do
            case "$address" in
                */*) printf 'permit=%s\n' "$address" ;;
                *) printf 'permit=%s/255.255.255.255\n' "$address" ;;
            esac
        done
    ) > "$conf/manager_ivr_secret.conf"
    chmod 600 "$conf/manager_ivr_secret.conf"
else
    # manager.conf #includes this file: without it Asterisk refuses
    # manager.conf and AMI stays closed; calls are still answered and queued
    echo "no AMI secret in $secret_file: AMI stays closed" >&2
    rm -f "$conf/manager_ivr_secret.conf"
fi

{
    if [ -n "${IVR_SERVER:-}" ]; then printf 'IVR_SERVER=%s\n' "$IVR_SERVER"; fi
} > "$conf/extensions_ivr_globals.conf"

chown -R asterisk:asterisk "$conf"

# the prompts directory is a volume of the base image: link them at start
for lang in en ru; do
    link="/var/lib/asterisk/sounds/$lang"
    if [ ! -e "$link" ] && [ ! -L "$link" ]; then
        ln -s "/usr/share/asterisk/sounds/$lang" "$link"
    fi
done

exec /usr/local/bin/entrypoint.sh "$@"
EOF

EXPOSE 5060/udp 10000-10199/udp

ENTRYPOINT ["/usr/local/bin/ivr-asterisk-start"]
CMD ["/usr/sbin/asterisk", "-f", "-vvv", "-T", "-n", "-U", "asterisk", "-G", "asterisk"]

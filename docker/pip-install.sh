#!/bin/sh
# `pip install` for the image's build steps: trusts the CA bundle of the build secret `ca_bundle` when
# one was given (a TLS-intercepting proxy); the bundle is mounted for the step only, never stored.
set -eu
if [ -s /run/secrets/ca_bundle ]; then
    export PIP_CERT=/run/secrets/ca_bundle
fi
exec pip install "$@"

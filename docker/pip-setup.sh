# Sourced by the build stages of docker/Dockerfile and docker/mlflow.Dockerfile before pip runs
# (never part of a final image): trust the extra CA certificates in docker/ca-certificates/ and
# offer the wheels in docker/wheels/. Both folders are empty by default.
set -e
if ls /tmp/build-inputs/ca/*.crt >/dev/null 2>&1; then
  # pip's own bundle (certifi) plus the extra certificates
  cat "$(python3 -c 'import pip._vendor.certifi as certifi; print(certifi.where())')" /tmp/build-inputs/ca/*.crt \
    > /tmp/build-inputs/ca-bundle.pem
  export PIP_CERT=/tmp/build-inputs/ca-bundle.pem
fi
if ls /tmp/build-inputs/wheels/*.whl >/dev/null 2>&1; then
  export PIP_FIND_LINKS=/tmp/build-inputs/wheels
fi

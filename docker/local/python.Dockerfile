# A stand-in for python:3.11-slim, from Debian's archive (docker/build-local-bases.sh): `python` and
# `pip` on PATH are a virtual environment of Debian's Python 3.11, so `pip install` works as in the
# official image (Debian's own Python refuses system-wide installs, PEP 668).
ARG DEBIAN_IMAGE=hpo-local/debian:bookworm
FROM ${DEBIAN_IMAGE}
ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive
RUN apt-get update -q \
    && apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /usr/local/python
ENV PATH=/usr/local/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
CMD ["python3"]

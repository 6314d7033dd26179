# The single-stage APC Dockerfile deploystack used before issue #12 (git show 731381a:compose/apc/Dockerfile),
# kept as the peer of tests/bench/test_build_bench.py: built on the same context, in the same run.
# APC: one Django app per image; nginx on 8000 in front of gunicorn or uWSGI on a unix socket.
# Build context: this folder, _sourced/, ca-bundle.crt, app/ (the Django project) and deploystack/
# (deploystack/__init__.py and deploystack/contrib/, for the settings helper and DB router).
ARG BASE_IMAGE=deploystack/base:bookworm
FROM ${BASE_IMAGE}

COPY _sourced/apt-install /usr/local/sbin/apt-install
RUN apt-install nginx python3 python3-venv uwsgi-core uwsgi-plugin-python3 libpq5 \
    && rm -f /etc/nginx/sites-enabled/default \
    && useradd --system --uid 10001 --user-group --create-home --home-dir /home/app \
        --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0750 /run/app

ENV LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/opt/deploystack

# pip trusts the host's CA bundle (an intercepting proxy's root included) when there is one.
COPY ca-bundle.crt /tmp/ca-bundle.crt
RUN python3 -m venv /opt/venv \
    && if [ -s /tmp/ca-bundle.crt ]; then export PIP_CERT=/tmp/ca-bundle.crt; fi \
    && pip install --quiet "gunicorn>=22,<24"

COPY _sourced/lib.sh /usr/local/lib/deploystack/lib.sh
COPY nginx.conf /etc/nginx/nginx.conf
COPY entrypoint /usr/local/bin/entrypoint
COPY apc-health /usr/local/bin/apc-health
RUN chmod 0755 /usr/local/bin/entrypoint /usr/local/bin/apc-health
COPY apc-worker-health /usr/local/bin/apc-worker-health
RUN chmod 0755 /usr/local/bin/apc-worker-health

# manage.py is always there, so the glob may match no requirements file without failing the COPY;
# the dependencies get their own layer, rebuilt only when requirements.txt changes.
COPY app/manage.py app/requirements*.txt /tmp/app-requirements/
RUN if [ -f /tmp/app-requirements/requirements.txt ]; then \
        if [ -s /tmp/ca-bundle.crt ]; then export PIP_CERT=/tmp/ca-bundle.crt; fi \
        && pip install --quiet -r /tmp/app-requirements/requirements.txt; \
    fi \
    && rm -rf /tmp/app-requirements

# The context's deploystack/ holds the package folder (deploystack/deploystack/__init__.py, as the
# generator writes it); a bare package (deploystack/__init__.py) is accepted too.
COPY deploystack/ /tmp/deploystack-package/
RUN if [ -f /tmp/deploystack-package/deploystack/__init__.py ]; then \
        mkdir -p /opt/deploystack && cp -a /tmp/deploystack-package/deploystack /opt/deploystack/; \
    else \
        mkdir -p /opt/deploystack && cp -a /tmp/deploystack-package /opt/deploystack/deploystack; \
    fi \
    && rm -rf /tmp/deploystack-package \
    && python -c "import deploystack.contrib"
COPY app/ /app/
WORKDIR /app

# Static files are collected at build time: the settings must import with no other environment.
# DEPLOYSTACK_BUILD=1 (this command only, never in the image's environment) gives them a random key
# that dies with the process. An empty build argument means "the default of manage.py".
ARG DJANGO_SETTINGS_MODULE
RUN if [ -z "${DJANGO_SETTINGS_MODULE:-}" ]; then unset DJANGO_SETTINGS_MODULE; fi \
    && DEPLOYSTACK_BUILD=1 python manage.py collectstatic --noinput --verbosity 0

# Nothing in the running container is root: nginx and the app server run as `app`.
USER app
EXPOSE 8000
ENTRYPOINT ["/usr/local/bin/entrypoint"]
CMD ["serve"]

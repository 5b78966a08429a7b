# digitpipe image: installs the pinned dependencies with the team extra (psycopg, Flask-WTF), so the same image runs
# the MLflow and Prefect servers, the Prefect workers, the Dask cluster and `digitpipe serve` of compose.yaml; as a
# non-root user.
# Build: docker build -t digitpipe .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY digitpipe ./digitpipe
COPY flows ./flows
COPY tasks ./tasks
COPY cli ./cli
# The README's install plus the team extra, into a venv copied into the runtime stage (CPU index: torch==2.13.0+cpu).
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu \
       -c requirements.lock ".[team]"

FROM python:3.11-slim
RUN useradd --create-home --uid 1000 digitpipe && mkdir /data && chown digitpipe /data  # /data: MLflow's artifacts
COPY --from=build /opt/venv /opt/venv
WORKDIR /home/digitpipe/app
COPY --chown=digitpipe:digitpipe flows ./flows
COPY --chown=digitpipe:digitpipe tasks ./tasks
COPY --chown=digitpipe:digitpipe data ./data
COPY --chown=digitpipe:digitpipe mlflow.yaml prefect.yaml ./
# served/: `digitpipe serve`'s answers (compose mounts a volume here, which takes this folder's owner)
RUN mkdir served && chown digitpipe:digitpipe served
ENV PATH=/opt/venv/bin:$PATH DIGITPIPE_HOME=/home/digitpipe/app PYTHONUNBUFFERED=1
USER 1000
CMD ["prefect", "worker", "start", "--pool", "digitpipe-process", "--type", "process"]

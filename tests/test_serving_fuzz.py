"""Schemathesis against a live `digitpipe serve` over its own GET /openapi.json: every operation with generated
bodies that fit the document and bodies that break it (negative data), then stateful sequences that follow the
document's links (/predict's request_id into /feedback). Asserted for every request: no 5xx, every 4xx a one-line
JSON error, and every reply as the document describes it."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.helpers import serving_process, write_config

pytestmark = [pytest.mark.slow, pytest.mark.servers]
EXAMPLES = 100  # per operation and generation mode (docs/tests.md: how many requests, how long)
FUZZED = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def served(logreg_onnx, tmp_path_factory):
    """`digitpipe serve` on 127.0.0.1 answering with a .onnx file; its URL, until the module's tests end."""
    folder = tmp_path_factory.mktemp("fuzzed")
    config = write_config(folder / "mlflow.yaml", tracking_uri=f"sqlite:///{folder}/mlflow.db",
                          serving={"requests_dir": str(folder / "served"), "feedback_batch": 1000})
    with serving_process(folder, config, "--model", logreg_onnx) as served:
        yield served.url
        metrics = urllib.request.urlopen(served.url + "/metrics", timeout=10).read().decode()
    assert "Traceback" not in served.log, served.log
    answered = re.findall(r'^digitpipe_requests_total\{route="([^"]+)",status="(\d+)"\} (\S+)$', metrics, re.M)
    print(f"{sum(float(n) for *_, n in answered):.0f} requests:", sorted({(r, s) for r, s, _ in answered}))
    assert not [line for line in answered if line[1].startswith("5")], answered


@pytest.fixture(scope="module")
def api(served):
    schema = schemathesis.openapi.from_url(served + "/openapi.json")
    schema.config.checks.negative_data_rejection.expected_statuses.append("413")  # more images than a request takes
    return schema


def one_line_json_error(ctx, response, case) -> None:
    """A refusal is {"error": "one line"}, nothing else; a 5xx is never an answer."""
    assert response.status_code < 500, f"{response.status_code}: {response.text[:300]}"
    if response.status_code >= 400:
        body = json.loads(response.content)
        assert list(body) == ["error"] and body["error"] and "\n" not in body["error"], body


OPERATIONS = ["GET /", "POST /predict", "POST /invocations", "POST /feedback", "GET /health", "GET /metrics",
              "GET /ping", "GET /version"]


@pytest.mark.parametrize(("operation", "mode"), [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.startswith("POST")], ids=str)  # a GET takes nothing
def test_no_generated_request_gets_a_5xx_or_more_than_one_line(api, operation, mode):
    method, path = operation.split()
    assert operation in {op.ok().label for op in api.get_all_operations()}, "the document lists every route"

    @given(case=api[path][method].as_strategy(generation_mode=mode))
    @FUZZED
    def each(case):
        case.call_and_validate(additional_checks=[one_line_json_error], excluded_checks=_not_for(case), timeout=60)

    each()


def _not_for(case) -> list:
    """Where the document cannot say all a valid body must be, a schema-valid body may rightly be refused: a
    picture (any bytes) that shows no digit; MLflow's bodies, whose column names must match the rows' lengths and
    name each pixel once (rules across fields that JSON Schema cannot state)."""
    fully_described = case.media_type == "application/json" and case.path != "/invocations"
    return [] if fully_described else [positive_data_acceptance]


def test_stateful_sequences_follow_predict_into_feedback(api):
    machine = api.as_state_machine()

    class Checked(machine):
        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, additional_checks=[one_line_json_error], excluded_checks=_not_for(case),
                                   transport_kwargs=kwargs or None, recorder=self.recorder)

    Checked.run(settings=settings(FUZZED, max_examples=40, stateful_step_count=6))

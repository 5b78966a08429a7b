// The drawing page: strokes on a canvas (pointer events: mouse, touch, pen), sent as a PNG to /predict when a
// stroke ends; the answer, its top three probabilities and the version that answered; "right" / "it was a ..."
// go to /feedback with the answer's request id.
const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const status = document.getElementById("status");
let drawing = false;
let requestId = null;

function clearPad() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
  document.getElementById("result").hidden = true;
  requestId = null;
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  pad.setPointerCapture(event.pointerId);
  ink.strokeStyle = "#fff";
  ink.lineWidth = 18;
  ink.lineCap = ink.lineJoin = "round";
  ink.beginPath();
  ink.moveTo(...point(event));
  ink.lineTo(...point(event));
  ink.stroke();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  ink.lineTo(...point(event));
  ink.stroke();
});
for (const end of ["pointerup", "pointercancel"]) {
  pad.addEventListener(end, () => {
    if (!drawing) return;
    drawing = false;
    pad.toBlob((png) => predict(png, "image/png"), "image/png");
  });
}

async function predict(body, type) {
  status.textContent = "asking the model...";
  try {
    const reply = await fetch("/predict", { method: "POST", headers: { "Content-Type": type }, body });
    const answer = await reply.json();
    if (!reply.ok) throw new Error(answer.error || reply.statusText);
    show(answer);
    status.textContent = "";
  } catch (error) {
    status.textContent = `not answered: ${error.message}`;
  }
}

function show(answer) {
  const first = answer.predictions[0];
  requestId = first.request_id;
  document.getElementById("answer").textContent = first.digit;
  const top = first.probabilities.map((p, digit) => [p, digit]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  document.getElementById("bars").replaceChildren(...top.map(([p, digit]) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.dataset.digit = digit;
    bar.innerHTML = `<span>${digit}</span><div style="width:${Math.max(2, 200 * p)}px"></div>` +
      `<em>${(100 * p).toFixed(1)}%</em>`;
    return bar;
  }));
  document.getElementById("served").textContent =
    `answered by ${answer.model} v${answer.version ?? "-"} (${answer.precision})`;
  document.getElementById("result").hidden = false;
}

async function sendFeedback(label) {
  if (!requestId) return;
  const headers = { "Content-Type": "application/json" };
  const token = document.getElementById("token").value;
  if (token) headers.Authorization = `Bearer ${token}`;
  const reply = await fetch("/feedback", { method: "POST", headers,
    body: JSON.stringify({ request_id: requestId, label }) });
  const said = await reply.json();
  status.textContent = reply.ok ? (said.right ? "thanks: confirmed" : `thanks: recorded as a ${said.label}`)
    : `not recorded: ${said.error}`;
}

document.getElementById("clear").addEventListener("click", clearPad);
document.getElementById("right").addEventListener("click", () => sendFeedback("right"));
document.getElementById("digits").replaceChildren(...Array.from({ length: 10 }, (_, digit) => {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = digit;
  button.dataset.digit = digit;
  button.addEventListener("click", () => sendFeedback(digit));
  return button;
}));
document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) predict(file, file.type || "application/octet-stream");
});

fetch("/health").then((r) => r.json()).then((health) => {
  document.getElementById("token-row").hidden = !health.feedback_token;  // the service listens beyond loopback
});
clearPad();

// The drawing page: strokes on a canvas (pointer events: mouse, touch, pen), sent as a PNG to /predict when a
// stroke ends, or an uploaded picture; the answer, its top three probabilities and the version that answered;
// "Right" / "no, it was ..." go to /feedback with the request id of the answer on screen, once per answer.
//
// One small state machine. Every /predict request gets the next sequence number, and only the newest request may
// show its answer: a drawing goes on changing while earlier strokes' replies are on their way, and on a slow network
// they can arrive last. While a request is pending, no answer is on screen, so feedback can only ever name the
// answer to the picture the person is looking at.
const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const result = document.getElementById("result");
const status = document.getElementById("status");
const LONG_SIDE = 1024;  // pixels: a phone's photo shrunk to this fits the server's 4 MB body limit many times over

const state = {
  seq: 0,            // the newest request's number; a reply to any other is dropped
  requestId: null,   // the request id of the answer on screen (null: none is shown)
  sending: false,    // a feedback post is in flight: its buttons wait for the reply
};

// A new question: the answer on screen belongs to a picture that is no longer the one asked about.
async function ask(picture) {
  const seq = ++state.seq;
  hideAnswer();
  status.textContent = "asking the model...";
  try {
    const body = await picture;
    const reply = await fetch("/predict", { method: "POST", body,
      headers: { "Content-Type": body.type || "application/octet-stream", "X-Page-Seq": String(seq) } });
    const said = await reply.json().catch(() => ({}));  // a proxy's HTML error page has no JSON
    if (seq !== state.seq) {
      console.info(`dropped the late answer to request ${seq} (the page is at ${state.seq})`);
      return;
    }
    if (!reply.ok) throw new Error(said.error || `${reply.status} ${reply.statusText}`);
    showAnswer(said);
  } catch (error) {
    if (seq === state.seq) showError(error.message);  // an older request's failure says nothing about the newest
  }
}

function showAnswer(answer) {
  const first = answer.predictions[0];
  state.requestId = first.request_id;
  result.dataset.requestId = first.request_id;  // what feedback will name, visible in the DOM
  document.getElementById("answer").textContent = first.digit;
  const top = first.probabilities.map((p, digit) => [p, digit]).sort((a, b) => b[0] - a[0]).slice(0, 3);
  document.getElementById("bars").replaceChildren(...top.map(([p, digit]) => bar(p, digit)));
  document.getElementById("served").textContent =
    `answered by ${answer.model} v${answer.version ?? "-"} (${answer.precision})`;
  result.hidden = false;
  status.textContent = "";
  setSending(false);  // a new answer: its buttons are free
}

function bar(p, digit) {
  const row = document.createElement("div");
  row.className = "bar";
  row.dataset.digit = digit;
  row.innerHTML = `<span>${digit}</span><div style="width:${Math.max(2, 200 * p)}px"></div>` +
    `<em>${(100 * p).toFixed(1)}%</em>`;
  return row;
}

// A refused picture has no answer: the previous one must not stay on screen to be judged in its place.
function showError(message) {
  hideAnswer();
  status.textContent = `not answered: ${message}`;
}

function hideAnswer() {
  result.hidden = true;
  state.requestId = null;
  delete result.dataset.requestId;
  document.getElementById("answer").textContent = "";
  document.getElementById("bars").replaceChildren();
  document.getElementById("served").textContent = "";
}

// Clear counts as a new request: a reply still on its way is for a drawing that is gone.
function reset() {
  state.seq++;
  blank();
  hideAnswer();
  status.textContent = "";
}

function blank() {
  ink.fillStyle = "#000";
  ink.fillRect(0, 0, pad.width, pad.height);
}

async function sendFeedback(label) {
  const judged = state.requestId;  // the answer on screen now: the reply is about it, whatever is drawn meanwhile
  if (!judged || state.sending) return;
  setSending(true);  // one post per click: a double click must not record the digit twice
  const headers = { "Content-Type": "application/json" };
  const token = document.getElementById("token").value;
  if (token) headers.Authorization = `Bearer ${token}`;
  let recorded = false;
  try {
    const reply = await fetch("/feedback", { method: "POST", headers,
      body: JSON.stringify({ request_id: judged, label }) });
    const said = await reply.json().catch(() => ({}));
    recorded = reply.ok;
    if (state.requestId === judged) {  // else a newer drawing's status stays
      status.textContent = reply.ok ? (said.right ? "thanks: confirmed" : `thanks: recorded as ${article(said.label)}`)
        : `not recorded: ${said.error || `${reply.status} ${reply.statusText}`}`;
    }
  } catch (error) {
    if (state.requestId === judged) status.textContent = `not recorded: ${error.message}`;
  } finally {
    // an answer takes one label: once recorded its buttons stay off until the next answer shows
    if (!recorded && state.requestId === judged) setSending(false);
  }
}

function setSending(sending) {
  state.sending = sending;
  for (const button of document.querySelectorAll("#judge button")) button.disabled = sending;
}

function article(digit) {
  return `${digit === 8 ? "an" : "a"} ${digit}`;  // of 0-9, only "eight" starts with a vowel sound
}

// A phone's photo (12 megapixels, ~5 MB) is over the server's body limit: shrunk here to LONG_SIDE and sent as a
// JPEG. The EXIF orientation is applied now, since the canvas's JPEG carries none. A picture the browser cannot
// decode goes as it is, so that the server's one-line reason is what the person reads.
async function fitted(file) {
  let picture;
  try {
    picture = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    return file;
  }
  const scale = LONG_SIDE / Math.max(picture.width, picture.height);
  if (scale >= 1) {
    picture.close();
    return file;
  }
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(picture.width * scale);
  canvas.height = Math.round(picture.height * scale);
  const paint = canvas.getContext("2d");
  paint.fillStyle = "#fff";  // a JPEG has no transparency: painted white, as the server paints it
  paint.fillRect(0, 0, canvas.width, canvas.height);
  paint.imageSmoothingQuality = "high";  // averages the pixels dropped: thin strokes and noise shrink well
  paint.drawImage(picture, 0, 0, canvas.width, canvas.height);
  picture.close();
  return new Promise((resolve) => canvas.toBlob((jpeg) => resolve(jpeg ?? file), "image/jpeg", 0.92));
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

let drawing = false;
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
    ask(new Promise((resolve) => pad.toBlob(resolve, "image/png")));  // numbered now, at the stroke's end
  });
}

document.getElementById("clear").addEventListener("click", reset);
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
  event.target.value = "";  // the same file chosen again is a new upload
  if (file) ask(fitted(file));
});

fetch("/health").then((r) => r.json()).then((health) => {
  document.getElementById("token-row").hidden = !health.feedback_token;  // the service listens beyond loopback
});
blank();

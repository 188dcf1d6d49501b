// The posts-api page: a client of the public API, nothing more. It keeps the token in
// sessionStorage, reads and writes through /v1, and streams uploads with progress.

const TOKEN_KEY = "posts-api-token";
const $ = (selector, root = document) => root.querySelector(selector);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  subject: null,
  cursor: null,
};

/// What a failed request means, in words a person understands.
function explain(status, problem) {
  const detail = problem && problem.detail ? ` (${problem.detail})` : "";
  switch (status) {
    case 400: return `The request was not understood${detail}.`;
    case 401: return "Sign in with a token first; the one in use is missing, expired or not accepted.";
    case 403: return "Only the author of this post may change it.";
    case 404: return "That no longer exists; it may have been deleted.";
    case 409: return `That conflicts with what is stored${detail}.`;
    case 412: return "The post changed in the meantime; it has been reloaded.";
    case 413: return `Too large${detail}.`;
    case 415: return `This type of file is not accepted${detail}.`;
    case 422: return problem && problem.errors
      ? problem.errors.map((e) => `${e.field}: ${e.message}`).join("; ")
      : `Some fields are not valid${detail}.`;
    case 429: return "You have as many uploads running as allowed; try again when one finishes.";
    case 503: return "The service is busy or a dependency is down; try again in a moment.";
    default: return `Something went wrong (HTTP ${status})${detail}.`;
  }
}

class ApiError extends Error {
  constructor(status, problem) {
    super(explain(status, problem));
    this.status = status;
  }
}

function say(message, isError = false) {
  const status = $("#status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

function headers(extra = {}) {
  const all = { ...extra };
  if (state.token) all.Authorization = `Bearer ${state.token}`;
  return all;
}

async function call(method, path, body) {
  const init = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
  if (body) init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (response.status === 204) return null;
  const json = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, json);
  return json;
}

/// The subject of a JWT, read without verifying it (the service verifies).
function subjectOf(token) {
  try {
    const payload = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    return JSON.parse(atob(payload)).sub || null;
  } catch {
    return null;
  }
}

function showIdentity() {
  state.subject = state.token ? subjectOf(state.token) : null;
  $("#who").textContent = state.token
    ? `Signed in as ${state.subject || "an unnamed user"}.`
    : "Not signed in: you can read, not write.";
  $("#sign-out").hidden = !state.token;
}

function signIn(token) {
  state.token = token.trim();
  if (state.token) sessionStorage.setItem(TOKEN_KEY, state.token);
  else sessionStorage.removeItem(TOKEN_KEY);
  $("#token").value = "";
  showIdentity();
}

function formatSize(bytes) {
  const units = ["bytes", "KiB", "MiB", "GiB"];
  let size = bytes;
  let unit = 0;
  while (size >= 1024 && unit < units.length - 1) {
    size /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${size} bytes` : `${size.toFixed(1)} ${units[unit]}`;
}

/// Fetches bytes (with the token, when reads need one) as a blob URL.
async function blobUrl(url) {
  const response = await fetch(url, { headers: headers() });
  if (!response.ok) throw new ApiError(response.status, null);
  return URL.createObjectURL(await response.blob());
}

const BASE83 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~";
const base83 = (text) => [...text].reduce((value, digit) => value * 83 + BASE83.indexOf(digit), 0);
const toLinear = (value) => {
  const x = value / 255;
  return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4;
};
const toSrgb = (value) => {
  const x = Math.max(0, Math.min(1, value));
  return Math.round((x <= 0.0031308 ? x * 12.92 : 1.055 * x ** (1 / 2.4) - 0.055) * 255);
};
const signedSquare = (value) => Math.sign(value) * value * value;

/// A canvas painted with an image's blurhash (https://blurha.sh), shown until it loads.
function placeholder(image) {
  const width = 32;
  const height = Math.max(1, Math.round((32 * image.height) / image.width));
  const hash = image.blurhash;
  const size = base83(hash[0]);
  const across = (size % 9) + 1;
  const down = Math.floor(size / 9) + 1;
  const maximum = (base83(hash[1]) + 1) / 166;
  const colours = [];
  for (let index = 0; index < across * down; index += 1) {
    if (index === 0) {
      const value = base83(hash.substring(2, 6));
      colours.push([value >> 16, (value >> 8) & 255, value & 255].map(toLinear));
    } else {
      const value = base83(hash.substring(4 + index * 2, 6 + index * 2));
      colours.push([Math.floor(value / 361), Math.floor(value / 19) % 19, value % 19]
        .map((channel) => signedSquare((channel - 9) / 9) * maximum));
    }
  }
  const pixels = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const sum = [0, 0, 0];
      for (let j = 0; j < down; j += 1) {
        for (let i = 0; i < across; i += 1) {
          const basis = Math.cos((Math.PI * x * i) / width) * Math.cos((Math.PI * y * j) / height);
          colours[i + j * across].forEach((channel, c) => { sum[c] += channel * basis; });
        }
      }
      pixels.set([...sum.map(toSrgb), 255], (y * width + x) * 4);
    }
  }
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").putImageData(new ImageData(pixels, width, height), 0, 0);
  canvas.className = "preview placeholder";
  canvas.style.aspectRatio = `${image.width} / ${image.height}`;
  canvas.setAttribute("aria-hidden", "true");
  return canvas;
}

/// An image's preview: its blurhash at once, then its `thumb` size (or its bytes).
function preview(attachment) {
  const image = document.createElement("img");
  image.alt = `Preview of ${attachment.filename}`;
  image.className = "preview";
  const described = attachment.image;
  const source = described?.variants?.thumb ?? attachment.content_url;
  if (!described) {
    blobUrl(source).then((url) => { image.src = url; }).catch(() => image.remove());
    return image;
  }
  const painted = placeholder(described);
  image.addEventListener("load", () => painted.replaceWith(image), { once: true });
  blobUrl(source).then((url) => { image.src = url; }).catch(() => {});
  return painted;
}

function renderAttachment(post, attachment, list) {
  const item = document.createElement("li");
  item.className = "attachment";
  const name = document.createElement("span");
  name.textContent = `${attachment.filename} · ${attachment.content_type} · ${formatSize(attachment.size)}`;
  item.append(name);
  if (attachment.content_type.startsWith("image/")) item.prepend(preview(attachment));
  const download = document.createElement("button");
  download.type = "button";
  download.textContent = "Download";
  download.setAttribute("aria-label", `Download ${attachment.filename}`);
  download.addEventListener("click", async () => {
    try {
      const link = document.createElement("a");
      link.href = await blobUrl(attachment.content_url);
      link.download = attachment.filename;
      document.body.append(link);
      link.click();
      link.remove();
    } catch (error) {
      say(error.message, true);
    }
  });
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", `Delete ${attachment.filename}`);
  remove.addEventListener("click", async () => {
    try {
      await call("DELETE", attachment.url);
      item.remove();
      say(`Deleted ${attachment.filename}.`);
    } catch (error) {
      say(error.message, true);
    }
  });
  item.append(download, remove);
  list.append(item);
}

/// Files above this many bytes go straight to S3 (0: never); set by the service.
const DIRECT_UPLOAD_BYTES = Number(
  document.querySelector('meta[name="posts-api-direct-upload-bytes"]').content,
);

/// Sends `body` with XMLHttpRequest, reporting upload progress to `bar`; resolves to the
/// parsed JSON answer (or null), rejects with an ApiError unless the status is `expected`.
function send(method, url, requestHeaders, body, bar, expected) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    for (const [name, value] of Object.entries(requestHeaders)) request.setRequestHeader(name, value);
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) bar.value = Math.round((event.loaded / event.total) * 100);
    });
    request.addEventListener("load", () => {
      let json = null;
      try { json = JSON.parse(request.responseText); } catch { json = null; }
      if (request.status === expected) resolve(json);
      else reject(new ApiError(request.status, json));
    });
    request.addEventListener("error", () => reject(new Error("the connection was interrupted")));
    request.send(body);
  });
}

/// Uploads one file with a progress bar; resolves to the attachment. Small files go
/// through the API as a multipart form; large ones straight to S3 by a presigned PUT,
/// which the service then verifies.
async function upload(post, file, uploads) {
  const direct = DIRECT_UPLOAD_BYTES > 0 && file.size > DIRECT_UPLOAD_BYTES;
  const item = document.createElement("li");
  const label = document.createElement("label");
  label.textContent = `${file.name}${direct ? " (straight to storage)" : ""} `;
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  label.append(bar);
  item.append(label);
  uploads.append(item);
  const type = file.type || "application/octet-stream";
  try {
    let attachment;
    if (direct) {
      const ticket = await call("POST", `${post.attachments_url}/uploads`, {
        filename: file.name,
        content_type: type,
        size: file.size,
      });
      // The browser sets Content-Length (the signed size) and Host itself.
      const signed = Object.fromEntries(Object.entries(ticket.headers)
        .filter(([name]) => !["content-length", "host"].includes(name.toLowerCase())));
      await send(ticket.method, ticket.url, signed, file, bar, 200);
      attachment = await call("POST", ticket.complete_url);
    } else {
      // A multipart form; the browser sets its Content-Type with the boundary.
      const form = new FormData();
      form.append("file", file, file.name);
      const answer = await send("POST", post.attachments_url, headers(), form, bar, 201);
      attachment = answer.items[0];
    }
    bar.value = 100;
    item.classList.add("done");
    return attachment;
  } catch (error) {
    item.classList.add("failed");
    throw error;
  }
}

async function uploadAll(post, files, node) {
  const list = $(".attachments", node);
  const uploads = $(".uploads", node);
  for (const file of files) {
    try {
      const attachment = await upload(post, file, uploads);
      renderAttachment(post, attachment, list);
      say(`Uploaded ${file.name}.`);
    } catch (error) {
      say(`${file.name}: ${error.message}`, true);
    }
  }
}

function renderPost(post, position = "append") {
  const node = $("#post-template").content.firstElementChild.cloneNode(true);
  node.dataset.id = post.id;
  const fill = (current) => {
    $(".post-title", node).textContent = current.title;
    $(".post-body", node).textContent = current.body;
    const when = new Date(current.created_at).toLocaleString();
    $(".meta", node).textContent = `${current.author ? `by ${current.author}, ` : ""}${when}`;
    $(".edit-button", node).setAttribute("aria-label", `Edit “${current.title}”`);
    $(".delete-button", node).setAttribute("aria-label", `Delete post “${current.title}”`);
    $(".file-input", node).setAttribute("aria-label", `Add files to “${current.title}”`);
  };
  fill(post);
  const list = $(".attachments", node);
  for (const attachment of post.attachments) renderAttachment(post, attachment, list);

  const edit = $(".edit", node);
  $(".edit-button", node).addEventListener("click", () => {
    edit.title.value = $(".post-title", node).textContent;
    edit.body.value = $(".post-body", node).textContent;
    edit.hidden = false;
    edit.title.focus();
  });
  $(".cancel", edit).addEventListener("click", () => { edit.hidden = true; });
  edit.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const updated = await call("PATCH", post.url, { title: edit.title.value, body: edit.body.value });
      fill(updated);
      edit.hidden = true;
      say("Saved.");
    } catch (error) {
      say(error.message, true);
    }
  });
  $(".delete-button", node).addEventListener("click", async () => {
    try {
      await call("DELETE", post.url);
      node.remove();
      say("Post deleted.");
    } catch (error) {
      say(error.message, true);
    }
  });
  const input = $(".file-input", node);
  input.addEventListener("change", () => {
    uploadAll(post, [...input.files], node);
    input.value = "";
  });
  const drop = $(".drop", node);
  drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    uploadAll(post, [...event.dataTransfer.files], node);
  });
  if (position === "prepend") $("#posts").prepend(node);
  else $("#posts").append(node);
}

/// Lists posts again from the first page (after signing in or out: reads may need a token).
function reloadPosts() {
  $("#posts").replaceChildren();
  state.cursor = null;
  loadPosts();
}

async function loadPosts() {
  const query = new URLSearchParams({ limit: "20" });
  if (state.cursor) query.set("cursor", state.cursor);
  try {
    const page = await call("GET", `/v1/posts?${query}`);
    for (const post of page.items) {
      // A post published while this page was loading is shown already.
      if (!document.querySelector(`#posts > li[data-id="${post.id}"]`)) renderPost(post);
    }
    state.cursor = page.next_cursor;
    $("#more").hidden = !state.cursor;
  } catch (error) {
    say(error.message, true);
  }
}

function start() {
  showIdentity();
  $("#dev-token").hidden =
    document.querySelector('meta[name="posts-api-dev-tokens"]').content !== "on";
  $("#sign-in").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("#token").value);
    say(state.token ? "Token in use." : "Signed out.");
    reloadPosts();
  });
  $("#sign-out").addEventListener("click", () => {
    signIn("");
    say("Signed out.");
    reloadPosts();
  });
  $("#dev-token").addEventListener("click", async () => {
    try {
      const minted = await call("POST", "/v1/dev/token", { subject: "developer" });
      signIn(minted.token);
      say(`Signed in with a development token for ${minted.subject}.`);
      reloadPosts();
    } catch (error) {
      say(error.message, true);
    }
  });
  $("#new-post").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    try {
      const post = await call("POST", "/v1/posts", { title: form.title.value, body: form.body.value });
      renderPost(post, "prepend");
      form.reset();
      say("Published.");
    } catch (error) {
      say(error.message, true);
    }
  });
  $("#more").addEventListener("click", loadPosts);
  loadPosts();
}

start();

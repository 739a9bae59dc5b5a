// The sandbox's exam page: start a session, answer question 1, a countdown, resume after a reload.
// `EXAM_VARIANT` is set in the first line the server prepends (sandbox/exam_page.py).
"use strict";
(() => {
  const FAULTY = EXAM_VARIANT === "faulty";
  const KEY = "exam.session";
  const EXAM_ID = 1, QUESTION_ID = 1, MINUTES = 30;
  const $ = (id) => document.getElementById(id);
  let ticker = null;

  const busy = (on) => { $("spinner").hidden = !on; };
  const load = () => { try { return JSON.parse(localStorage.getItem(KEY)); } catch { return null; } };
  const store = (state) => localStorage.setItem(KEY, JSON.stringify(state));
  const fail = (message) => { $("error").textContent = message; $("error").hidden = false; };

  async function api(method, path, body) {
    const res = await fetch(path, {
      method, headers: body ? {"Content-Type": "application/json"} : {},
      body: body ? JSON.stringify(body) : undefined,
    });
    const data = await res.json().catch(() => ({}));
    if (!res.ok) throw new Error(`${method} ${path} answered ${res.status} ${data.error || ""}`.trim());
    return data;
  }

  function tick(state) {
    const left = Math.max(0, Math.floor((state.deadline - Date.now()) / 1000));
    const mm = String(Math.floor(left / 60)).padStart(2, "0"), ss = String(left % 60).padStart(2, "0");
    $("timer").textContent = `${mm}:${ss}`;
  }

  function show(state, resumed) {
    $("start-form").hidden = true;
    $("exam").hidden = false;
    $("session").textContent = state.id;
    $("resumed").hidden = !resumed;
    $("answer").value = state.answer || "";
    $("saved").textContent = state.answer ? `Saved answer: ${state.answer}` : "No answer saved yet";
    tick(state);
    clearInterval(ticker);
    ticker = setInterval(() => tick(state), 250);
  }

  async function start() {
    const candidate = $("candidate").value.trim();
    if (!candidate) { fail("Enter your candidate id"); return; }
    busy(true);
    try {
      const session = await api("POST", "/v1/sessions", {candidate_id: candidate, exam_id: EXAM_ID});
      const state = {id: session.id, deadline: Date.now() + MINUTES * 60 * 1000, answer: ""};
      store(state);
      show(state, false);
    } catch (err) {
      console.error("could not start the exam:", err.message);
      fail(`Could not start the exam: ${err.message}`);
    } finally {
      busy(false);
    }
  }

  async function save() {
    const state = load();
    const answer = $("answer").value;
    busy(true);
    try {
      await api("POST", `/v1/sessions/${state.id}/answers`, {question_id: QUESTION_ID, answer});
      state.answer = answer;
      if (!FAULTY) store(state);  // faulty: the answer is kept in memory only, a reload loses it
      $("saved").textContent = `Saved answer: ${answer}`;
      if (!FAULTY) busy(false);  // faulty: the spinner is never hidden after a successful save
    } catch (err) {
      busy(false);
      console.error("could not save the answer:", err.message);
      fail(`Could not save your answer: ${err.message}`);
    }
  }

  async function resume() {
    const state = load();
    if (!state || !state.id) return;
    busy(true);
    try {
      const session = await api("GET", `/v1/sessions/${state.id}`);
      if (session.status === "in_progress") show(state, true);
      else localStorage.removeItem(KEY);
    } catch (err) {
      console.error("could not resume the session:", err.message);
      fail(`Could not resume your session: ${err.message}`);
    } finally {
      busy(false);
    }
  }

  $("start").addEventListener("click", start);
  $("save").addEventListener("click", save);
  resume();
})();

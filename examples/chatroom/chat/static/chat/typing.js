// "… is typing" in the room page, on trio_djws signals (signals.js, loaded just before):
// typing calls the Python signal chat.typing (at most every 1.5 s); the server calls the
// JavaScript chat.typing in every window of the room, and this page lists who types for 3 s.
(() => {
  "use strict";

  const SHOWN_MS = 3000;
  const THROTTLE_MS = 1500;

  const room = Number(document.getElementById("room").dataset.pk);
  const box = document.getElementById("typing");
  const textInput = document.getElementById("text");
  const nickInput = document.getElementById("nick");
  const typers = new Map(); // nick → timer that forgets it

  function render() {
    const names = [...typers.keys()].sort();
    const verb = names.length === 1 ? "is" : "are";
    box.textContent = names.length ? `${names.join(", ")} ${verb} typing…` : "";
  }

  TrioDJWS.connect("chat.typing", ({ nick, window }) => {
    if (window === TrioDJWS.window) {
      return; // our own typing
    }
    clearTimeout(typers.get(nick));
    typers.set(nick, setTimeout(() => { typers.delete(nick); render(); }, SHOWN_MS));
    render();
  });

  let last = 0;
  textInput.addEventListener("input", () => {
    const now = Date.now();
    if (textInput.value.trim() && now - last >= THROTTLE_MS) {
      last = now;
      TrioDJWS.call("chat.typing", { room, nick: nickInput.value.trim() });
    }
  });
})();

// The few React hooks useJob uses, to run it in a browser test without React itself:
// state that re-renders when set, and effects that run after a render when their deps change.
const states = [];
const effects = [];
let cursor = 0;
let component = null;

export function useState(initial) {
  const i = cursor++;
  if (!(i in states)) states[i] = typeof initial === "function" ? initial() : initial;
  const set = (value) => {
    states[i] = typeof value === "function" ? value(states[i]) : value;
    queueMicrotask(render);
  };
  return [states[i], set];
}

export function useEffect(effect, deps) {
  const i = cursor++;
  const previous = effects[i];
  if (!previous || deps.some((d, k) => d !== previous.deps[k])) {
    if (previous?.cleanup) previous.cleanup();
    effects[i] = { deps, cleanup: null };
    queueMicrotask(() => { effects[i].cleanup = effect(); });
  }
}

export function unmountAll() {
  for (const e of effects) if (e?.cleanup) e.cleanup();
}

function render() {
  cursor = 0;
  component();
}

export function mount(fn) {
  component = fn;
  render();
}

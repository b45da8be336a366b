// React as an ES module for the hook tests: the real React and ReactDOM of the npm registry
// (tests/e2e/node), loaded by the page from their UMD builds, handed on under the names
// `import ... from "react"` asks for.
const React = window.React;
export default React;
export const { StrictMode, createElement, useCallback, useEffect, useMemo, useReducer, useRef, useState } = React;

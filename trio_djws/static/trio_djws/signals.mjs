/*
 * ES module entry of the trio_djws signals client: `import TrioDJWS, {call, connect} from
 * "/static/trio_djws/signals.mjs"`. The client itself is signals.js (a plain script that
 * defines the global `TrioDJWS`); importing it here runs it once per page.
 */
import "./signals.js";

const TrioDJWS = globalThis.TrioDJWS;

export default TrioDJWS;
export const connect = (name, fn) => TrioDJWS.connect(name, fn);
export const disconnect = (name, fn) => TrioDJWS.disconnect(name, fn);
export const call = (name, kwargs) => TrioDJWS.call(name, kwargs);

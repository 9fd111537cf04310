/** Embedded safe Python interpreter (Pyodide in permission-restricted child processes). */
export { InterpreterPool, InterpreterSession, DEFAULT_LIMITS, type InterpreterLimits, type InterpreterPoolOptions, type RunOptions, type InterpreterFunction, type CheckoutOptions } from "./pool.js";
export { DEFAULT_MOUNT_LIMITS, type Mount, type MountMode, type MountLimits, type MountInfo } from "./mounts.js";
export {
  InterpreterError,
  InterpreterSyntaxError,
  InterpreterRuntimeError,
  InterpreterTimeoutError,
  InterpreterMemoryError,
  InterpreterCrashedError,
  InterpreterReplayError,
  InterpreterDumpError,
  InterpreterMountError,
  type MountRefusal,
} from "./errors.js";
export { type Step, type Paused, type Done, type StartOptions, type LoadOptions } from "./pausable.js";
export { PyTuple, PyKwargs, type PyOpaque } from "./values.js";

/** Typed errors of the embedded Python interpreter. */
export class InterpreterError extends Error {
  override name = "InterpreterError";
}

export class InterpreterSyntaxError extends InterpreterError {
  override name = "InterpreterSyntaxError";
  constructor(message: string, readonly line: number | null, readonly offset: number | null) {
    super(message);
  }
}

export class InterpreterRuntimeError extends InterpreterError {
  override name = "InterpreterRuntimeError";
  /** `traceback` holds the user's frames only (file `<code>`), then the exception line. */
  constructor(readonly pythonType: string, message: string, readonly traceback: string) {
    super(message);
  }
}

export class InterpreterTimeoutError extends InterpreterError {
  override name = "InterpreterTimeoutError";
}

export class InterpreterMemoryError extends InterpreterError {
  override name = "InterpreterMemoryError";
}

/** The interpreter process failed or the session can no longer be used. */
export class InterpreterCrashedError extends InterpreterError {
  override name = "InterpreterCrashedError";
}

/**
 * A pausable run could not be replayed: the code asked the host for something other than what
 * was recorded (a different function or different arguments), so the recorded results do not
 * apply. See runner.py (`_Deterministic`) for what makes a run non-replayable.
 */
export class InterpreterReplayError extends InterpreterError {
  override name = "InterpreterReplayError";
}

/** The bytes given to `pool.load` are not a dump this interpreter can load (corrupted, tampered, other version). */
export class InterpreterDumpError extends InterpreterReplayError {
  override name = "InterpreterDumpError";
}

/** A path refused by a mount, and why. */
export interface MountRefusal {
  /** The virtual path (under the mount's `path`). */
  path: string;
  reason: string;
}

/**
 * A mount could not be set up (bad path, host directory missing, caps exceeded: at checkout),
 * or the write-back of a read-write mount refused some changes (after a run or at release; the
 * other changes were applied). `refused` lists the paths refused; after a run, `value` holds the
 * run's value, or `cause` its own error.
 */
export class InterpreterMountError extends InterpreterError {
  override name = "InterpreterMountError";
  value?: unknown;
  constructor(message: string, readonly refused: MountRefusal[] = [], options?: { cause?: unknown }) {
    super(message, options);
  }
}

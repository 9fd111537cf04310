/**
 * Wire types of the processes API (HTTP + the stream WebSocket), from
 * @agentbox/protocol, plus the few names the SDK adds for its users.
 */
import { SIGNAL_NAMES, WS_CLOSE } from "@agentbox/protocol";

export type {
  ProcessInfo,
  ProcessLogs,
  StartProcessRequest,
  StreamClientMessage,
  StreamServerMessage,
} from "@agentbox/protocol";

export type ProcessStatus = "running" | "exited";
export type ProcessStream = "stdout" | "stderr";

/** Where a stream's output was lost: the bytes from `requestedOffset` to `availableOffset` had been evicted. */
export interface Truncation {
  requestedOffset: number;
  availableOffset: number;
}

/** The signals the server accepts for `kill`. */
export const PROCESS_SIGNALS = SIGNAL_NAMES;
export type ProcessSignal = (typeof SIGNAL_NAMES)[number];

/** WebSocket close codes of the stream (1000 exited, 1001 server stopping, 4401, 4404). */
export const STREAM_CLOSE = WS_CLOSE;

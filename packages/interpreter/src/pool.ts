/**
 * A pool of configured workers of one kind: `min` kept warm ahead of demand,
 * at most `max` alive (checked out + idle), replaced when they die, and
 * recycled after `recycleAfter` feeds. Checking out takes a warm worker at
 * once when there is one; the pool refills in the background.
 */
import { Worker } from "./worker.js";

export interface WorkerPoolOptions {
  /** Start and configure a new worker. */
  create: () => Promise<Worker>;
  min?: number;
  max?: number;
  /** Retire a worker after this many feeds (default 1000). */
  recycleAfter?: number;
  /** Called when a worker could not be started (the pool backs off and tries again later). */
  onError?: (error: Error) => void;
}

export class WorkerPool {
  private readonly idle: Worker[] = [];
  private readonly busy = new Set<Worker>();
  private starting = 0;
  private closed = false;
  private failures = 0;
  private retryTimer: NodeJS.Timeout | undefined;
  readonly min: number;
  readonly max: number;
  readonly recycleAfter: number;

  constructor(private readonly options: WorkerPoolOptions) {
    this.min = options.min ?? 1;
    this.max = options.max ?? 16;
    this.recycleAfter = options.recycleAfter ?? 1000;
  }

  get size(): { idle: number; busy: number; starting: number } {
    return { idle: this.idle.length, busy: this.busy.size, starting: this.starting };
  }

  /** Keep `min` workers warm. */
  warm(): void {
    if (this.closed || this.retryTimer) return;
    while (this.idle.length + this.starting < this.min && this.idle.length + this.starting + this.busy.size < this.max) {
      this.starting++;
      this.options
        .create()
        .then(
          (w) => {
            this.failures = 0;
            if (this.closed) return void w.kill();
            w.transport.onClose = ((previous) => (reason: string) => {
              previous?.(reason);
              const i = this.idle.indexOf(w);
              if (i >= 0) {
                this.idle.splice(i, 1);
                this.warm();
              }
            })(w.transport.onClose);
            this.idle.push(w);
          },
          (err: Error) => {
            this.failures++;
            this.options.onError?.(err);
            // Back off instead of a retry storm when workers cannot start.
            this.retryTimer = setTimeout(() => {
              this.retryTimer = undefined;
              this.warm();
            }, Math.min(30_000, 250 * 2 ** Math.min(this.failures, 7)));
            this.retryTimer.unref();
          },
        )
        .finally(() => this.starting--);
    }
  }

  /** A configured worker, warm if one is idle; the caller owns it until `release`. */
  async checkout(): Promise<Worker> {
    if (this.closed) throw new Error("the worker pool is closed");
    let worker: Worker | undefined;
    while ((worker = this.idle.shift()) && !worker.alive);
    if (!worker) {
      if (this.busy.size + this.starting >= this.max) throw new Error(`all ${this.max} workers of this pool are in use`);
      this.starting++;
      try {
        worker = await this.options.create();
      } finally {
        this.starting--;
      }
    }
    this.busy.add(worker);
    this.warm();
    return worker;
  }

  /** Give a worker back: dead, worn out or not reusable ones are shut down; others are reset and kept. */
  async release(worker: Worker, reuse = false): Promise<void> {
    this.busy.delete(worker);
    if (!reuse || this.closed || !worker.alive || worker.uses >= this.recycleAfter || this.idle.length >= this.min) {
      await worker.shutdown();
      this.warm();
      return;
    }
    const answer = await worker.request({ type: "reset" }, { timeoutMs: 5000 }).catch(() => undefined);
    if (answer?.type === "ok" && !this.closed) this.idle.push(worker);
    else worker.kill();
    this.warm();
  }

  /** Shut every worker down. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    await Promise.all([...this.idle.splice(0), ...this.busy].map((w) => w.shutdown()));
    this.busy.clear();
  }
}

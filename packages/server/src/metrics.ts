/** Prometheus text exposition of the server's counters and gauges. */
export class Metrics {
  private readonly requests = new Map<string, number>();
  private execCount = 0;
  private execSeconds = 0;

  countRequest(method: string, status: number): void {
    const key = `method="${method}",status="${status}"`;
    this.requests.set(key, (this.requests.get(key) ?? 0) + 1);
  }

  observeExec(durationMs: number): void {
    this.execCount++;
    this.execSeconds += durationMs / 1000;
  }

  render(sandboxesByStatus: Record<string, number>, runtimeUp: boolean): string {
    const lines = [
      "# HELP agentbox_http_requests_total HTTP requests answered, by method and status.",
      "# TYPE agentbox_http_requests_total counter",
      ...[...this.requests].map(([labels, n]) => `agentbox_http_requests_total{${labels}} ${n}`),
      "# HELP agentbox_sandboxes Sandboxes known to the store, by status.",
      "# TYPE agentbox_sandboxes gauge",
      ...["provisioning", "ready", "paused", "failed", "deleted"].map((s) => `agentbox_sandboxes{status="${s}"} ${sandboxesByStatus[s] ?? 0}`),
      "# HELP agentbox_exec_duration_seconds Stateless exec durations.",
      "# TYPE agentbox_exec_duration_seconds summary",
      `agentbox_exec_duration_seconds_count ${this.execCount}`,
      `agentbox_exec_duration_seconds_sum ${this.execSeconds.toFixed(6)}`,
      "# HELP agentbox_runtime_up Whether the server is connected to its runtime.",
      "# TYPE agentbox_runtime_up gauge",
      `agentbox_runtime_up ${runtimeUp ? 1 : 0}`,
    ];
    return `${lines.join("\n")}\n`;
  }
}

/**
 * CPU time and peak memory of local processes, from Linux's /proc: the agent child process and the
 * server processes that apply (both readable by the bench, which owns the first and either is root
 * or the same user as the second). Readers return null where /proc is missing or the process gone.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** utime + stime in clock ticks from the text of /proc/<pid>/stat. */
export function parseStatCpuTicks(text: string): number {
  // The command name in parentheses may contain spaces; count fields after the last ')'.
  // After it come field 3 (state) onwards; utime and stime are fields 14 and 15.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) throw new RangeError(`no utime/stime in /proc stat line: ${text.slice(0, 120)}`);
  return utime + stime;
}

/** Nanoseconds on CPU from the text of /proc/<pid>/schedstat (its first field, sum_exec_runtime). */
export function parseSchedstatCpuNanos(text: string): number {
  const n = Number(text.split(' ')[0]);
  if (!Number.isFinite(n) || text.trim() === '') throw new RangeError(`no run time in /proc schedstat line: ${text.slice(0, 120)}`);
  return n;
}

/** VmHWM (peak resident set size) in bytes from the text of /proc/<pid>/status; null if absent. */
export function parseVmHwmBytes(text: string): number | null {
  const m = /^VmHWM:\s+(\d+)\s+kB$/m.exec(text);
  return m?.[1] === undefined ? null : Number(m[1]) * 1024;
}

let ticksPerSecond: number | undefined;

/** sysconf(_SC_CLK_TCK), which Node does not expose; USER_HZ is 100 on every mainstream Linux ABI. */
export function clockTicksPerSecond(): number {
  if (ticksPerSecond === undefined) {
    const r = spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5000 });
    const n = Number(r.stdout?.trim());
    ticksPerSecond = r.status === 0 && Number.isInteger(n) && n > 0 ? n : 100;
  }
  return ticksPerSecond;
}

/** User plus system CPU seconds a process (all its threads) has used so far; null if unreadable. */
export function processCpuSeconds(pid: number): number | null {
  try {
    return parseStatCpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8')) / clockTicksPerSecond();
  } catch {
    return null;
  }
}

/**
 * CPU seconds a single-threaded process (a PostgreSQL backend or apply worker) has used so far, at
 * nanosecond resolution: /proc/<pid>/stat counts whole clock ticks (10 ms), which rounds a short
 * apply to 0. /proc/<pid>/schedstat covers only the main thread, which is the whole of a backend;
 * it needs CONFIG_SCHED_INFO, so stat's ticks stand in where it is missing. Null if unreadable.
 */
export function backendCpuSeconds(pid: number): number | null {
  try {
    return parseSchedstatCpuNanos(readFileSync(`/proc/${pid}/schedstat`, 'utf8')) / 1e9;
  } catch {
    return processCpuSeconds(pid);
  }
}

/** Peak resident set size of a live process in bytes; null if unreadable. */
export function processPeakRssBytes(pid: number): number | null {
  try {
    return parseVmHwmBytes(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return null;
  }
}

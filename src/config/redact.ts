import { errorMessage } from '../util/error-message.js';

/** Connection strings appear in logs and errors only through this: the password is never shown. */
export function redactDsn(dsn: string): string {
  try {
    const url = new URL(dsn);
    if (url.password) url.password = '***';
    return url.toString();
  } catch {
    return dsn.replace(/(password\s*=\s*)\S+/gi, '$1***').replace(/(:\/\/[^:/@]+:)[^@]*@/, '$1***@');
  }
}

/** Removes any password that an error message may have echoed from a connection string. */
export function redactSecrets(text: string): string {
  return text.replace(/(postgres(?:ql)?:\/\/[^:/@\s]+:)[^@\s]*@/g, '$1***@').replace(/(password\s*=\s*)\S+/gi, '$1***');
}

/** errorMessage with redactSecrets applied: what may reach a log line, an HTTP answer or the terminal. */
export function redactedMessage(err: unknown): string {
  return redactSecrets(errorMessage(err));
}

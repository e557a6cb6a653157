import type pg from 'pg';
import { agentClient } from '../util/agent-client.js';
import { redactedMessage } from '../config/redact.js';

/** How long the group-wide commands (part, the mesh checks) wait for one node to answer. */
export const GROUP_CONNECT_TIMEOUT_MS = 5000;

/**
 * A connection to a node of the group that may be down: the client, or the error (its message free
 * of secrets) for the caller to report as "did not answer" and go on with the other nodes.
 */
export async function tryConnect(dsn: string, applicationName: string): Promise<pg.Client | Error> {
  const client = agentClient({ connectionString: dsn, application_name: applicationName, connectionTimeoutMillis: GROUP_CONNECT_TIMEOUT_MS });
  client.on('error', () => undefined);
  try {
    await client.connect();
    return client;
  } catch (err) {
    await client.end().catch(() => undefined);
    return new Error(redactedMessage(err));
  }
}

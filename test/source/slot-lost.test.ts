import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PostgresServer } from '../../src/pg-server/postgres-server.js';
import { ReplicationConnection, SlotLostError } from '../../src/source/replication-connection.js';
import { availableServerVersions } from '../support/pg-versions.js';

describe.each(availableServerVersions())('a slot invalidated by max_slot_wal_keep_size on $label', ({ binDir }) => {
  let server: PostgresServer | undefined;
  const slot = 'pgbidi_p_to_l';
  beforeAll(async () => {
    server = await PostgresServer.start({ binDir, name: 'slot-lost', settings: { max_slot_wal_keep_size: '1MB' } });
    await server.query(`SELECT pg_create_logical_replication_slot($1, 'pgoutput')`, [slot]);
  });
  afterAll(async () => {
    await server?.destroy();
  });

  it('is reported by ensureSlot as SlotLostError, naming the slot and the re-join command', async () => {
    const s = server as PostgresServer;
    const connect = async (): Promise<ReplicationConnection> => {
      const c = new ReplicationConnection({ dsn: s.connectionString(), peer: 'p', applicationName: 'test', slot, publication: 'pgbidi' });
      await c.connect(() => undefined);
      return c;
    };
    const before = await connect();
    expect(await before.ensureSlot()).toBe('exists');
    before.destroy();

    // Each switch ends a 16 MB segment; the checkpoint then removes what the slot needs.
    for (let i = 0; i < 4; i++) await s.query(`SELECT pg_logical_emit_message(false, 'test', 'x'), pg_switch_wal()`);
    await s.query('CHECKPOINT');
    expect(await s.query(`SELECT wal_status FROM pg_replication_slots WHERE slot_name = $1`, [slot])).toEqual([{ wal_status: 'lost' }]);

    const after = await connect();
    try {
      const err: unknown = await after.ensureSlot().then(
        () => null,
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(SlotLostError);
      expect((err as SlotLostError).code).toBe('PGBIDI_SLOT_LOST');
      expect((err as SlotLostError).message).toContain(slot);
      expect((err as SlotLostError).message).toContain('pgbidi join --config');
      expect((err as SlotLostError).message).toContain('--from p');
    } finally {
      after.destroy();
    }
  });
});

import type { ClientBase } from 'pg';
import type { RelationMessage } from '../protocol/pgoutput-messages.js';
import { loadLocalTableAndTypes, UnknownTableError } from './local-catalog.js';
import { builtinTypeOids, mapRelation, SchemaMismatchError } from './table-mapping.js';
import type { TableMapping } from './table-mapping.js';

/**
 * The peer's Relation messages and how each maps onto the local table. A Relation message replaces
 * the mapping of its relation id (the walsender sends one after every relcache invalidation, so a
 * new one may describe a changed table); the local side is read from the catalog on first use.
 */
export class RelationCache {
  private readonly relations = new Map<number, RelationMessage>();
  private readonly mappings = new Map<number, TableMapping>();

  constructor(private readonly client: () => ClientBase) {}

  relation(r: RelationMessage): void {
    this.relations.set(r.relationId, r);
    this.mappings.delete(r.relationId);
  }

  /** After a reconnect the walsender resends Relation messages; the local catalog may have changed. */
  reset(): void {
    this.relations.clear();
    this.mappings.clear();
  }

  message(relationId: number): RelationMessage | undefined {
    return this.relations.get(relationId);
  }

  /** The mapping when it is loaded already (no I/O). */
  get(relationId: number): TableMapping | undefined {
    return this.mappings.get(relationId);
  }

  async load(relationId: number): Promise<TableMapping> {
    const cached = this.mappings.get(relationId);
    if (cached) return cached;
    const r = this.relations.get(relationId);
    if (!r) throw new SchemaMismatchError(`change for relation ${relationId} arrived before its Relation message`);
    let loaded;
    try {
      loaded = await loadLocalTableAndTypes(this.client(), r.namespace, r.name, builtinTypeOids(r));
    } catch (err) {
      if (!(err instanceof UnknownTableError)) throw err;
      throw new SchemaMismatchError(`table ${r.namespace}.${r.name} does not exist on this node, but the peer publishes it`, {
        table: `${r.namespace}.${r.name}`,
        fix: `create it here with the columns it has on the peer (${r.columns.map((c) => c.name).join(', ')}), or take it out of the peer's publication (replication.tables)`,
      });
    }
    const { table: local, typeNames: names } = loaded;
    const m = mapRelation(r, local, (oid) => names.get(oid) ?? `type OID ${oid}`);
    this.mappings.set(relationId, m);
    return m;
  }
}

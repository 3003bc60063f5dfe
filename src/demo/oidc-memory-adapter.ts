// The demo IdP's storage: oidc-provider's adapter contract kept in a Map, one per IdP. Nothing
// outlives the process, which is what a demo and a test want.

export interface StoredEntry {
  payload: Record<string, unknown>;
  expiresAt: number; // epoch ms, Infinity when no expiry
}

/**
 * A minimal per-provider in-memory adapter (supplying one also avoids the
 * "development-only in-memory adapter" warning of the built-in one, whose
 * store is shared module-wide).
 */
export class InMemoryAdapter {
  constructor(
    private readonly model: string,
    private readonly store: Map<string, StoredEntry>,
  ) {}

  private key(id: string): string {
    return `${this.model}:${id}`;
  }

  private live(key: string): StoredEntry | undefined {
    const entry = this.store.get(key);
    if (entry && entry.expiresAt <= Date.now()) {
      this.store.delete(key);
      return undefined;
    }
    return entry;
  }

  async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number): Promise<void> {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    this.store.set(this.key(id), { payload, expiresAt });
  }

  async find(id: string): Promise<Record<string, unknown> | undefined> {
    return this.live(this.key(id))?.payload;
  }

  async findByUid(uid: string): Promise<Record<string, unknown> | undefined> {
    return this.findBy((p) => p.uid === uid);
  }

  async findByUserCode(userCode: string): Promise<Record<string, unknown> | undefined> {
    return this.findBy((p) => p.userCode === userCode);
  }

  async consume(id: string): Promise<void> {
    const entry = this.live(this.key(id));
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id: string): Promise<void> {
    this.store.delete(this.key(id));
  }

  async revokeByGrantId(grantId: string): Promise<void> {
    const prefix = `${this.model}:`;
    for (const [key, entry] of this.store) {
      if (key.startsWith(prefix) && entry.payload.grantId === grantId) this.store.delete(key);
    }
  }

  private findBy(predicate: (payload: Record<string, unknown>) => boolean): Record<string, unknown> | undefined {
    const prefix = `${this.model}:`;
    for (const key of [...this.store.keys()]) {
      if (!key.startsWith(prefix)) continue;
      const entry = this.live(key);
      if (entry && predicate(entry.payload)) return entry.payload;
    }
    return undefined;
  }
}

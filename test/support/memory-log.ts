// A pino logger that keeps its lines in memory, for tests that read what was logged.
import { Writable } from 'node:stream';
import type { Logger, LevelWithSilent } from 'pino';
import { createLogger } from '../../src/ops/log.js';

export function memoryLogger(level: LevelWithSilent = 'trace'): { logger: Logger; text(): string; lines(): Array<Record<string, unknown>> } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  const logger = createLogger(level, destination);
  const text = () => chunks.join('');
  return {
    logger,
    text,
    lines: () =>
      text()
        .split('\n')
        .filter((line) => line.trim() !== '')
        .map((line) => JSON.parse(line) as Record<string, unknown>),
  };
}

// The docs a newcomer walks: README.md stays short (at most 15 KB) and ends in an index of the docs/
// pages; every relative link in README.md and docs/*.md reaches a file that exists and, for `#anchor`
// links, a heading of that file (GitHub's anchors); and every section of the README as it was before the
// docs/ pages (a single 116 KB file) is still a heading somewhere, reached from the README's index.
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';
import { alertRules } from '../support/alert-rules.js';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const README = 'README.md';
const README_MAX_BYTES = 15 * 1024;
const INDEX_HEADING = 'Documentation';

/** The old README's sections (## and ###), each with the page it lives on now. */
const OLD_SECTIONS: Array<[heading: string, page: string]> = [
  ['Two commands', README],
  ['Point an Okta IdP at Envoy', README],
  ['Which ext_proc mode', README],
  ['Which route is which IdP', 'docs/deploy.md'],
  ['Commands', 'docs/commands.md'],
  ['Configuration (environment)', 'docs/configuration.md'],
  ['What is stored', 'docs/architecture.md'],
  ['TokenVault API', 'docs/tokenvault-api.md'],
  ["Okta token inline hook: upstream claims in Okta's tokens", 'docs/okta-hook.md'],
  ['IdPs', 'docs/idps.md'],
  ['Deploy', 'docs/deploy.md'],
  ['On Envoy Gateway', 'docs/deploy.md'],
  ['On Istio', 'docs/deploy.md'],
  ['Upgrading', 'docs/upgrading.md'],
  ['Operations', 'docs/operations.md'],
  ['Security model', 'docs/security-model.md'],
  ['Performance', 'docs/architecture.md'],
  ['Layout', 'docs/layout.md'],
  ['Limits (today)', 'docs/limits.md'],
];

interface Heading {
  level: number;
  text: string;
  slug: string;
}

interface Link {
  target: string;
  line: number;
}

/** The lines of a Markdown file outside fenced code blocks, with their line numbers. */
function proseLines(markdown: string): Array<{ text: string; line: number }> {
  const out: Array<{ text: string; line: number }> = [];
  let fence: string | undefined;
  markdown.split('\n').forEach((text, index) => {
    const marker = /^\s*(```|~~~)/.exec(text)?.[1];
    if (marker && (fence === undefined || fence === marker)) {
      fence = fence === undefined ? marker : undefined;
      return;
    }
    if (fence === undefined) out.push({ text, line: index + 1 });
  });
  return out;
}

/** GitHub's anchor for a heading: the rendered text lower-cased, punctuation dropped, spaces to hyphens. */
function githubSlug(heading: string): string {
  const rendered = heading.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1').replace(/[`*]/g, '');
  return rendered
    .toLowerCase()
    .replace(/[^\p{L}\p{M}\p{N}\p{Pc} -]/gu, '')
    .replace(/ /g, '-');
}

function headingsOf(markdown: string): Heading[] {
  const seen = new Map<string, number>();
  const headings: Heading[] = [];
  for (const { text } of proseLines(markdown)) {
    const match = /^(#{1,6})\s+(.*?)\s*#*\s*$/.exec(text);
    if (!match) continue;
    const base = githubSlug(match[2]!);
    const count = seen.get(base) ?? 0;
    seen.set(base, count + 1);
    headings.push({ level: match[1]!.length, text: match[2]!, slug: count === 0 ? base : `${base}-${count}` });
  }
  return headings;
}

/** Inline links and images, `[text](target)`, outside code; absolute URLs left out. */
function linksOf(markdown: string): Link[] {
  const links: Link[] = [];
  for (const { text, line } of proseLines(markdown)) {
    const prose = text.replace(/`[^`]*`/g, '');
    for (const match of prose.matchAll(/\]\(\s*<?([^)\s>]+)>?(?:\s+"[^"]*")?\s*\)/g)) {
      const target = match[1]!;
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
      links.push({ target, line });
    }
  }
  return links;
}

function read(page: string): string {
  return readFileSync(path.join(ROOT, page), 'utf8');
}

function docPages(): string[] {
  return [
    README,
    ...readdirSync(path.join(ROOT, 'docs'))
      .filter((name) => name.endsWith('.md'))
      .sort()
      .map((name) => `docs/${name}`),
  ];
}

/** Every problem with the relative links of `page`: a missing file, or an anchor no heading has. */
function brokenLinks(page: string, markdown: string): string[] {
  const problems: string[] = [];
  for (const { target, line } of linksOf(markdown)) {
    const [file, anchor] = target.split('#', 2) as [string, string | undefined];
    const resolved = file === '' ? path.join(ROOT, page) : path.resolve(path.dirname(path.join(ROOT, page)), decodeURI(file));
    const where = `${page}:${line} → ${target}`;
    if (!resolved.startsWith(ROOT)) {
      problems.push(`${where}: outside the repository`);
      continue;
    }
    if (!existsSync(resolved)) {
      problems.push(`${where}: no such file`);
      continue;
    }
    if (anchor === undefined) continue;
    if (!resolved.endsWith('.md') || statSync(resolved).isDirectory()) {
      problems.push(`${where}: an anchor into a file that is not Markdown`);
      continue;
    }
    const slugs = headingsOf(readFileSync(resolved, 'utf8')).map((heading) => heading.slug);
    if (!slugs.includes(anchor)) problems.push(`${where}: no heading with that anchor (${path.relative(ROOT, resolved)} has ${slugs.join(', ')})`);
  }
  return problems;
}

/** The README's index: its links from the index heading to the end. */
function indexLinks(readme: string): string[] {
  const start = readme.search(new RegExp(`^## ${INDEX_HEADING}$`, 'm'));
  expect(start, `README.md has a "## ${INDEX_HEADING}" section`).to.be.at.least(0);
  return linksOf(readme.slice(start)).map((link) => link.target);
}

describe('docs a newcomer can walk (README.md and docs/)', () => {
  it(`README.md is at most ${README_MAX_BYTES / 1024} KB`, () => {
    expect(statSync(path.join(ROOT, README)).size).to.be.at.most(README_MAX_BYTES);
  });

  it('every relative link in README.md and docs/*.md reaches a file, and each #anchor a heading there', () => {
    const pages = docPages();
    expect(pages.length).to.be.at.least(10);
    const problems = pages.flatMap((page) => brokenLinks(page, read(page)));
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  it('every section of the old README is a heading of its page, and the README index reaches that page', () => {
    const readme = read(README);
    const index = indexLinks(readme);
    const problems: string[] = [];
    for (const [heading, page] of OLD_SECTIONS) {
      const headings = headingsOf(read(page));
      const found = headings.find((candidate) => candidate.text === heading);
      if (!found) {
        problems.push(`${page} has no heading "${heading}"`);
        continue;
      }
      if (page === README) continue;
      const isTitle = headings[0] === found;
      const reached = index.some((target) => target === `${page}#${found.slug}` || (isTitle && target === page));
      if (!reached) problems.push(`the README index has no link to ${page}${isTitle ? '' : `#${found.slug}`} ("${heading}")`);
    }
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  it('the README index links every page in docs/', () => {
    const index = indexLinks(read(README)).map((target) => target.split('#')[0]);
    const missing = docPages().filter((page) => page !== README && !index.includes(page));
    expect(missing).to.deep.equal([]);
  });

  it("every alert's runbook_url (deploy/prometheus/rules.yaml) reaches a section of docs/runbooks.md, and every section is an alert's", () => {
    const rules = alertRules();
    const sections = headingsOf(read('docs/runbooks.md')).filter((heading) => heading.level === 2);
    const problems: string[] = [];
    for (const rule of rules) {
      const url = rule.annotations?.runbook_url ?? '';
      const [file, anchor] = url.split('#', 2);
      if (file !== 'docs/runbooks.md' || !sections.some((section) => section.slug === anchor))
        problems.push(`${rule.alert}: runbook_url ${url} reaches no section of docs/runbooks.md`);
    }
    for (const section of sections)
      if (!rules.some((rule) => rule.alert === section.text)) problems.push(`docs/runbooks.md: section "${section.text}" is no alert of rules.yaml`);
    expect(rules.length).to.be.at.least(16);
    expect(problems, problems.join('\n')).to.deep.equal([]);
  });

  it('reads anchors as GitHub writes them', () => {
    expect(githubSlug('Which ext_proc mode')).to.equal('which-ext_proc-mode');
    expect(githubSlug("Bounds: an IdP's response is hostile input")).to.equal('bounds-an-idps-response-is-hostile-input');
    expect(githubSlug("Readiness: `GET /ready` on Envoy's readiness listener")).to.equal('readiness-get-ready-on-envoys-readiness-listener');
    expect(githubSlug('Limits (today)')).to.equal('limits-today');
    expect(headingsOf('# A\n```\n# not a heading\n```\n## A\n').map((heading) => heading.slug)).to.deep.equal(['a', 'a-1']);
    expect(brokenLinks('README.md', '[x](docs/no-such-page.md) [y](#no-such-heading) `[z](nowhere.md)`')).to.have.length(2);
  });
});

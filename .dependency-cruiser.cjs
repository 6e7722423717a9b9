// Import rules for virtio-net-ts, checked by `npm run depcruise` (part of `npm run check`).
// Paths are relative to the package root. Layers, lowest first: lib → pci → virtio → devices; index.ts,
// test/, bench/ and examples/ sit on top. A file may import from its own layer and the layers below.

/** Test-only files: never shipped, may use devDependencies, may reach across lib/ sub-folders. */
const TEST = '(\\.test\\.ts|\\.test-support\\.ts|\\.test-util\\.ts)$|^test/|^bench/';

/** A lib/ import rule for non-test files: `folder` may import only itself, `allowed` and lib/errors.ts. */
function libFolder(folder, allowed, comment) {
  const ok = [folder, ...allowed].join('|');
  return {
    name: `lib-${folder}-imports`,
    comment,
    severity: 'error',
    from: { path: `^lib/${folder}/`, pathNot: TEST },
    to: { path: '^lib/', pathNot: `^lib/(${ok})/|^lib/errors\\.ts$` },
  };
}

module.exports = {
  forbidden: [
    {
      name: 'lib-not-to-upper-layers',
      comment:
        'lib/ is the bottom layer (memory, packets, host bindings, backends); it must not know the PCI, ' +
        'virtio or device code built on it, so it stays reusable and free of circles. Tests included.',
      severity: 'error',
      from: { path: '^lib/' },
      to: { path: '^(pci|virtio|devices)/' },
    },
    {
      name: 'pci-not-to-upper-layers',
      comment:
        'pci/ models generic PCI functions (config space, MSI-X, SR-IOV); virtio transports and devices ' +
        'build on it, never the other way round. Tests included.',
      severity: 'error',
      from: { path: '^pci/' },
      to: { path: '^(virtio|devices)/' },
    },
    {
      name: 'virtio-not-to-devices',
      comment:
        'virtio/ is the device-independent virtio layer (queues, transport, admin); a concrete device ' +
        'plugs into it through interfaces, so virtio/ never imports devices/. Tests included.',
      severity: 'error',
      from: { path: '^virtio/' },
      to: { path: '^devices/' },
    },
    {
      name: 'not-to-top-level',
      comment:
        'index.ts (public exports), test/, bench/ and examples/ are consumers of the library; library ' +
        'code importing them would invert the layering.',
      severity: 'error',
      from: { path: '^(lib|pci|virtio|devices)/' },
      to: { path: '^(index\\.ts$|test/|bench/|examples/)' },
    },
    {
      name: 'not-to-test-files',
      comment:
        'Shipped code (including the public testing/ kits) must not import test-only files: the build ' +
        'excludes them, and they may use devDependencies.',
      severity: 'error',
      from: { pathNot: TEST },
      to: { path: TEST },
    },
    {
      name: 'lib-errors-imports',
      comment: 'lib/errors.ts is the root of everything; it imports nothing from lib/.',
      severity: 'error',
      from: { path: '^lib/errors\\.ts$' },
      to: { path: '^lib/' },
    },
    libFolder(
      'memory',
      [],
      'lib/memory (guest memory, fences) is the base every data path reads through; it needs only errors.',
    ),
    libFolder(
      'net',
      ['memory'],
      'lib/net (packet parsing, checksums, the NetBackend contract) works on guest memory and bytes; it ' +
        'must not depend on a concrete host backend (tap, vfio-user) or host bindings.',
    ),
    libFolder(
      'host',
      [],
      'lib/host (libc/io_uring/netns/link-monitor bindings) wraps the OS; it knows nothing of packets or ' +
        'guest memory.',
    ),
    libFolder(
      'tap',
      ['net', 'memory', 'host'],
      'lib/tap is one NetBackend: it implements the lib/net contract on top of the lib/host bindings.',
    ),
    libFolder(
      'vfio-user',
      ['host', 'memory'],
      'lib/vfio-user serves a PCI function over a socket; it is independent of networking (lib/net, ' +
        'lib/tap), so it can serve any device.',
    ),
    {
      name: 'no-circular',
      comment:
        'Import circles make module initialisation order fragile and hide layering mistakes; type-only ' +
        'imports count too (tsPreCompilationDeps), since they couple the files just the same.',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'not-outside-package',
      comment: 'The package must be self-contained: nothing may reach above its root (e.g. ../shared).',
      severity: 'error',
      from: {},
      to: { path: '^\\.\\./' },
    },
    {
      name: 'not-to-unresolvable',
      comment: 'An import that does not resolve is a broken path or a missing dependency.',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
    {
      name: 'no-non-package-json',
      comment:
        'Every npm package imported must be declared in package.json, not just happen to be installed.',
      severity: 'error',
      from: {},
      // A peer dependency with a peerDependenciesMeta entry is also typed npm-no-pkg (dependency-cruiser
      // reads every package.json key naming it); being a declared peer is enough.
      to: { dependencyTypes: ['npm-no-pkg', 'npm-unknown'], dependencyTypesNot: ['npm-peer'] },
    },
    {
      name: 'not-to-dev-dep',
      comment:
        'Code that is built and shipped (everything but tests, test/ and bench/) must not import ' +
        'devDependencies: consumers install only dependencies.',
      severity: 'error',
      from: { path: '^(index\\.ts$|lib|pci|virtio|devices|examples)', pathNot: TEST },
      to: { dependencyTypes: ['npm-dev'], pathNot: '(^|/)node_modules/v86/' },
    },
    {
      name: 'v86-only-in-v86-examples',
      comment:
        'v86 is an optional peer dependency (and a devDependency, so the tests have it): the library ' +
        'never imports it (attachToV86 takes the emulator object); only the v86 example, which the demo ' +
        'loads on --v86 alone, does.',
      severity: 'error',
      from: { pathNot: `^examples/v86-guest\\.ts$|${TEST}` },
      to: { path: '(^|/)node_modules/v86/' },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    exclude: { path: '^dist/' },
    tsConfig: { fileName: 'tsconfig.json' },
    // Type-only imports are dependencies too (for circles and layering).
    tsPreCompilationDeps: true,
    // No cache: worktrees may share one node_modules, and a full run takes only a few seconds.
  },
};

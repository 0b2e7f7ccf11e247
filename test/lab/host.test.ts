/** lab/host.ts: the kernel-version rule the lab tests branch on (docs/kernels.md); worker CPU between two reads. */
import { expect } from 'chai';
import { kernelAtLeast, workerTicksBetween } from '../../lab/host.js';

describe('lab/host: kernelAtLeast', () => {
  it('compares major.minor of Debian release strings', () => {
    expect(kernelAtLeast(6, 4, '6.1.0-50-amd64')).to.equal(false);
    expect(kernelAtLeast(6, 1, '6.1.0-50-amd64')).to.equal(true);
    expect(kernelAtLeast(6, 4, '6.12.95+deb12-amd64')).to.equal(true);
    expect(kernelAtLeast(6, 13, '6.12.95+deb12-amd64')).to.equal(false);
    expect(kernelAtLeast(6, 4, '7.0.1')).to.equal(true);
    expect(kernelAtLeast(6, 4, '5.19.0')).to.equal(false);
  });

  it('refuses a release it cannot read', () => {
    expect(() => kernelAtLeast(6, 4, 'linux')).to.throw(/does not start with major\.minor/);
  });
});

describe('lab/host: workerTicksBetween', () => {
  const w = (pid: number, cpuTicks: number) => ({ pid, comm: 'vhost-7', kind: 'thread' as const, cpuTicks });

  it("sums each worker's growth; a worker that started in between counts from zero", () => {
    expect(workerTicksBetween([w(10, 100), w(11, 5)], [w(10, 130), w(11, 5)])).to.equal(30);
    expect(workerTicksBetween([w(10, 100)], [w(10, 100), w(12, 40)])).to.equal(40);
  });

  it('a worker gone by the second read adds nothing; no workers, nothing', () => {
    expect(workerTicksBetween([w(10, 100), w(11, 50)], [w(10, 110)])).to.equal(10);
    expect(workerTicksBetween([], [])).to.equal(0);
  });
});

/** lab/host.ts: the kernel-version rule the lab tests branch on (docs/kernels.md). */
import { expect } from 'chai';
import { kernelAtLeast } from '../../lab/host.js';

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

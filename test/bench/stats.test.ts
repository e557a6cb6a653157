import { describe, expect, it } from 'vitest';
import { median, medianOf, percentile, ratio, summarizeLag } from '../../src/bench/stats.js';

describe('median', () => {
  it('takes the middle value, or the mean of the two middle values', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([7])).toBe(7);
    expect(median([])).toBeNaN();
  });

  it('does not reorder its input', () => {
    const values = [3, 1, 2];
    median(values);
    expect(values).toEqual([3, 1, 2]);
  });

  it('medianOf skips figures that were not measured', () => {
    expect(medianOf([null, 5, 1, null, 3])).toBe(3);
    expect(medianOf([null, Number.NaN])).toBeNull();
    expect(medianOf([])).toBeNull();
  });
});

describe('percentile (nearest rank)', () => {
  const hundred = Array.from({ length: 100 }, (_, i) => i + 1);

  it('returns a measured sample at the rank ceil(p/100 * n)', () => {
    expect(percentile(hundred, 50)).toBe(50);
    expect(percentile(hundred, 99)).toBe(99);
    expect(percentile(hundred, 100)).toBe(100);
    expect(percentile(hundred, 0)).toBe(1);
    expect(percentile([10, 30, 20], 50)).toBe(20);
    // 99 % of 10 samples is 9.9: the 10th smallest, the max.
    expect(percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99)).toBe(10);
  });

  it('is NaN for no samples and refuses p outside 0..100', () => {
    expect(percentile([], 50)).toBeNaN();
    expect(() => percentile([1], 101)).toThrow(RangeError);
    expect(() => percentile([1], Number.NaN)).toThrow(RangeError);
  });

  it('summarizeLag gives p50, p99, max and the sample count', () => {
    expect(summarizeLag([0.02, 0.01, 0.5, 0.03])).toEqual({ p50: 0.02, p99: 0.5, max: 0.5, samples: 4 });
    expect(summarizeLag([])).toBeNull();
  });
});

describe('ratio', () => {
  it('divides measured figures and refuses missing or zero denominators', () => {
    expect(ratio(3, 2)).toBe(1.5);
    expect(ratio(null, 2)).toBeNull();
    expect(ratio(3, null)).toBeNull();
    expect(ratio(3, 0)).toBeNull();
    expect(ratio(Number.POSITIVE_INFINITY, 2)).toBeNull();
  });
});

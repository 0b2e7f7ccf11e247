/** The guest memory table: mapped regions, address translation, struct vhost_memory. */
export { MemTableError, type MemTableReason } from './errors.js';
export { MappedRegion, mappedRegionCount } from './region.js';
export {
  MemTable, type MapOptions, maxMemSlots, ringAreaSizes, type RingArea, RING_ALIGN, MAX_RING_SIZE,
  MAX_MEM_REGIONS_PATH, VHOST_DEFAULT_MAX_MEM_REGIONS, VHOST_MEMORY_LAYOUT, VHOST_USER_MEMORY_MAX_NREGIONS,
} from './memtable.js';

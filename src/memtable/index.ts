/** The guest memory table: mapped regions, address translation, struct vhost_memory. */
export { MemTableError, type MemTableReason } from './errors.js';
export { MappedRegion, mappedRegionCount } from './region.js';
export {
  MemTable,
  type MemoryLimit,
  maxMemSlots,
  ringAreaSizes,
  MAX_MEM_REGIONS_PATH,
  VHOST_DEFAULT_MAX_MEM_REGIONS,
  VHOST_MEMORY_LAYOUT,
} from './memtable.js';

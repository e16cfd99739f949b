// Image references live in @berth/identifiers: the CLI reads them as the pull does.
export { parseReference, type Reference } from '@berth/identifiers';

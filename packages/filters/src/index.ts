export { type Adaptor, type Filter, type Operator, always, any, all, Selector } from "./filter.js";
export { parse, parseAll } from "./parser.js";
export { FilterSyntaxError } from "./errors.js";
export { type AdaptOptions, type FieldFunc, adaptFunc, adaptObject } from "./adaptor.js";

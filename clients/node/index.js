'use strict';
const core = require('./lib/core');
const { expressAdapter, rawBody } = require('./lib/express');

class Idempotency extends core.Idempotency {
  constructor(pool, options) {
    super(pool, options);
    // idem.express(handler[, overrides]): an Express route handler
    this.express = expressAdapter(this);
  }
}

module.exports = { ...core, Idempotency, rawBody };

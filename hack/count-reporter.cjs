// Mocha's spec output, plus the run's counts written as JSON to $SHOAL_TEST_COUNTS
// so hack/test.sh can print the one closing line CI reads.
'use strict';
const fs = require('node:fs');
const Mocha = require('mocha');

class CountReporter extends Mocha.reporters.Spec {
  constructor(runner, options) {
    super(runner, options);
    runner.once('end', () => {
      const file = process.env.SHOAL_TEST_COUNTS;
      if (file) fs.writeFileSync(file, JSON.stringify(this.stats));
    });
  }
}

module.exports = CountReporter;

-- SPDX-License-Identifier: Apache-2.0
-- A device counts once against its deployment's max-failures, however many
-- times it is held back: deployments.failures is the number of updates with
-- held_back set.
ALTER TABLE device_updates ADD COLUMN held_back boolean NOT NULL DEFAULT false;
UPDATE device_updates SET held_back = true WHERE state = 'penalty';
UPDATE deployments dp SET failures =
    (SELECT count(*) FROM device_updates u WHERE u.deployment_id = dp.id AND u.held_back);

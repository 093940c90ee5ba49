-- Housing registry: streets, the grid hierarchy, compounds, buildings, places,
-- households and residents, organisations, staff, responsibilities, and the
-- device directory of 0001 extended with each device's place.
-- Forward only. docs/registry.md describes the CSV files that fill these tables;
-- `sensord registry import` is the only writer.
--
-- The constraints here make an inconsistent registry impossible to store:
-- every reference is a foreign key, a parent is always exactly one level up,
-- and the street of a grid unit, a place and a device is carried down the
-- chain by composite foreign keys, so devices.street (what the ingest path
-- checks topics against) cannot disagree with the device's place.
-- The street columns are filled by the importer. Every foreign key is
-- checked at commit, when an import's rows are all in place: one import may
-- move a building to another compound, or a branch to another street, and
-- the order in which it writes the rows does not matter.

CREATE DOMAIN registry_id AS text CHECK (VALUE ~ '^[A-Za-z0-9_.-]{1,64}$');
CREATE DOMAIN registry_text AS text
    CHECK (length(VALUE) BETWEEN 1 AND 200 AND VALUE !~ '[[:cntrl:]]' AND VALUE = btrim(VALUE));
CREATE DOMAIN person_phone AS text
    CHECK (VALUE ~ '^(1[0-9]{10}|0[0-9]{2,3}-[0-9]{7,8})$');

CREATE TABLE streets (
    street_id  text PRIMARY KEY CHECK (street_id ~ '^[A-Za-z0-9_-]{1,64}$'),
    name       registry_text NOT NULL
);

-- The four levels below the street. A comprehensive grid's parent is its
-- street; every other unit's parent is a unit exactly one level up.
CREATE TABLE grid_units (
    grid_id      registry_id PRIMARY KEY,
    level        text NOT NULL CHECK (level IN
                     ('comprehensive_grid', 'residential_area', 'micro_grid', 'building_group')),
    parent_id    registry_id NOT NULL,
    name         registry_text NOT NULL,
    street_id    text NOT NULL REFERENCES streets DEFERRABLE INITIALLY DEFERRED,
    parent_unit  text GENERATED ALWAYS AS
                     (CASE WHEN level <> 'comprehensive_grid' THEN parent_id END) STORED,
    parent_level text GENERATED ALWAYS AS (CASE level
                     WHEN 'residential_area' THEN 'comprehensive_grid'
                     WHEN 'micro_grid' THEN 'residential_area'
                     WHEN 'building_group' THEN 'micro_grid' END) STORED,
    CONSTRAINT grid_units_level_key UNIQUE (grid_id, level),
    CONSTRAINT grid_units_street_key UNIQUE (grid_id, level, street_id),
    CONSTRAINT grid_units_top_is_street
        CHECK (level <> 'comprehensive_grid' OR parent_id = street_id),
    CONSTRAINT grid_units_parent FOREIGN KEY (parent_unit, parent_level, street_id)
        REFERENCES grid_units (grid_id, level, street_id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX grid_units_parent_unit ON grid_units (parent_unit);

CREATE TABLE organisations (
    org_id     registry_id PRIMARY KEY,
    org_type   text NOT NULL CHECK (org_type IN (
                   'ops_centre', 'ops_workstation', 'residents_committee', 'property_company',
                   'owners_committee', 'elevator_vendor', 'device_vendor', 'enforcement')),
    name       registry_text NOT NULL,
    street_id  text NOT NULL REFERENCES streets DEFERRABLE INITIALLY DEFERRED,
    phone      text CHECK (phone ~ '^[0-9][0-9-]{2,19}$')  -- a duty line, not a person's
);
CREATE INDEX organisations_street_id ON organisations (street_id);

-- A compound (小区) lies in one residential area.
CREATE TABLE compounds (
    compound_id  registry_id PRIMARY KEY,
    name         registry_text NOT NULL,
    area_id      text NOT NULL,
    area_level   text GENERATED ALWAYS AS ('residential_area') STORED,
    FOREIGN KEY (area_id, area_level) REFERENCES grid_units (grid_id, level)
        DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX compounds_area_id ON compounds (area_id);

CREATE TABLE buildings (
    building_id  registry_id PRIMARY KEY,
    compound_id  text NOT NULL REFERENCES compounds DEFERRABLE INITIALLY DEFERRED,
    name         registry_text NOT NULL,
    floors       smallint CHECK (floors BETWEEN 1 AND 200),
    CONSTRAINT buildings_compound_key UNIQUE (building_id, compound_id)
);
CREATE INDEX buildings_compound_id ON buildings (compound_id);

-- Every place with an address: dwellings and the shared places where devices
-- hang. Only outdoor places may lie outside a building.
CREATE TABLE addresses (
    address_id         registry_id PRIMARY KEY,
    place_type         text NOT NULL CHECK (place_type IN (
                           'dwelling', 'public_kitchen', 'public_bathroom', 'stairwell',
                           'corridor', 'elevator', 'fire_lane', 'bike_shed', 'shop', 'office')),
    building_group_id  text NOT NULL,
    compound_id        text NOT NULL REFERENCES compounds DEFERRABLE INITIALLY DEFERRED,
    building_id        text,
    label              registry_text NOT NULL,
    floor              smallint CHECK (floor BETWEEN -10 AND 200),
    street_id          text NOT NULL,
    group_level        text GENERATED ALWAYS AS ('building_group') STORED,
    CONSTRAINT addresses_place_key UNIQUE (address_id, place_type),
    CONSTRAINT addresses_street_key UNIQUE (address_id, street_id),
    CONSTRAINT addresses_indoors
        CHECK (building_id IS NOT NULL OR place_type IN ('fire_lane', 'bike_shed')),
    CONSTRAINT addresses_building FOREIGN KEY (building_id, compound_id)
        REFERENCES buildings (building_id, compound_id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT addresses_group FOREIGN KEY (building_group_id, group_level, street_id)
        REFERENCES grid_units (grid_id, level, street_id) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX addresses_building_group_id ON addresses (building_group_id);
CREATE INDEX addresses_compound_id ON addresses (compound_id);
CREATE INDEX addresses_building_id ON addresses (building_id);

-- A household lives at a dwelling, never at a shared place.
CREATE TABLE households (
    household_id  registry_id PRIMARY KEY,
    address_id    text NOT NULL,
    place_type    text GENERATED ALWAYS AS ('dwelling') STORED,
    FOREIGN KEY (address_id, place_type) REFERENCES addresses (address_id, place_type)
        DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX households_address_id ON households (address_id);

-- Personal data: name and phone are masked by `sensord registry show` and never logged.
CREATE TABLE residents (
    resident_id   registry_id PRIMARY KEY,
    household_id  text NOT NULL REFERENCES households DEFERRABLE INITIALLY DEFERRED,
    name          registry_text NOT NULL,
    phone         person_phone,
    tags          text[] NOT NULL DEFAULT '{}' CHECK (
                      cardinality(tags) = 0
                      OR array_to_string(tags, ';', '~') ~ '^[a-z][a-z0-9_]{0,31}(;[a-z][a-z0-9_]{0,31})*$')
);
CREATE INDEX residents_household_id ON residents (household_id);

-- Grid workers and leaders, duty officers, building-group leaders, property staff.
CREATE TABLE staff (
    staff_id  registry_id PRIMARY KEY,
    org_id    text NOT NULL REFERENCES organisations DEFERRABLE INITIALLY DEFERRED,
    role      text NOT NULL CHECK (role IN ('grid_leader', 'grid_worker', 'duty_officer',
                  'building_leader', 'property_staff', 'technician')),
    name      registry_text NOT NULL,
    phone     person_phone
);
CREATE INDEX staff_org_id ON staff (org_id);

CREATE TABLE staff_grid_units (
    staff_id  text NOT NULL REFERENCES staff DEFERRABLE INITIALLY DEFERRED,
    grid_id   text NOT NULL REFERENCES grid_units DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (staff_id, grid_id)
);
CREATE INDEX staff_grid_units_grid_id ON staff_grid_units (grid_id);

-- Which organisation answers for what, where: the scope is a street, a grid
-- unit, a compound or a building; `any` covers every category.
CREATE TABLE responsibilities (
    org_id       text NOT NULL REFERENCES organisations DEFERRABLE INITIALLY DEFERRED,
    scope_type   text NOT NULL CHECK (scope_type IN ('street', 'grid', 'compound', 'building')),
    scope_id     registry_id NOT NULL,
    category     text NOT NULL CHECK (category IN ('any', 'smoke', 'ebike', 'elevator', 'fire_lane')),
    role         text NOT NULL CHECK (role IN
                     ('responder', 'maintainer', 'supervisor', 'enforcer', 'notified')),
    -- One of these is the scope, as a foreign key; the others are NULL.
    street_id    text GENERATED ALWAYS AS
                     (CASE WHEN scope_type = 'street' THEN scope_id END) STORED
                     REFERENCES streets DEFERRABLE INITIALLY DEFERRED,
    grid_id      text GENERATED ALWAYS AS
                     (CASE WHEN scope_type = 'grid' THEN scope_id END) STORED
                     REFERENCES grid_units DEFERRABLE INITIALLY DEFERRED,
    compound_id  text GENERATED ALWAYS AS
                     (CASE WHEN scope_type = 'compound' THEN scope_id END) STORED
                     REFERENCES compounds DEFERRABLE INITIALLY DEFERRED,
    building_id  text GENERATED ALWAYS AS
                     (CASE WHEN scope_type = 'building' THEN scope_id END) STORED
                     REFERENCES buildings DEFERRABLE INITIALLY DEFERRED,
    PRIMARY KEY (org_id, scope_type, scope_id, category)
);
CREATE INDEX responsibilities_scope ON responsibilities (scope_id, scope_type);

-- The daemon's directory (0001) gains the device's place and upkeep. Devices
-- registered before the registry have no place until an import gives them one.
ALTER TABLE devices
    ADD COLUMN address_id         text,
    ADD COLUMN model              registry_text,
    ADD COLUMN installed_on       date,
    ADD COLUMN heartbeat_s        integer CHECK (heartbeat_s BETWEEN 10 AND 604800),
    ADD COLUMN inspection_due     date,
    ADD COLUMN maintainer_org_id  text REFERENCES organisations DEFERRABLE INITIALLY DEFERRED,
    ADD CONSTRAINT devices_placed_have_heartbeat
        CHECK (address_id IS NULL OR heartbeat_s IS NOT NULL),
    ADD CONSTRAINT devices_address FOREIGN KEY (address_id, street)
        REFERENCES addresses (address_id, street_id) DEFERRABLE INITIALLY DEFERRED;
CREATE INDEX devices_address_id ON devices (address_id);
CREATE INDEX devices_maintainer_org_id ON devices (maintainer_org_id);

-- The daemon caches the whole registry: any change to it is a reload.
CREATE TRIGGER streets_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON streets
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER grid_units_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON grid_units
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER organisations_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON organisations
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER compounds_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON compounds
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER buildings_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON buildings
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER addresses_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON addresses
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER households_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON households
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER residents_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON residents
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER staff_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON staff
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER staff_grid_units_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON staff_grid_units
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();
CREATE TRIGGER responsibilities_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON responsibilities
    FOR EACH STATEMENT EXECUTE FUNCTION notify_registry_changed();

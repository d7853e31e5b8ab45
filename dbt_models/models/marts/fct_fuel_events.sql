-- One row per refuel or drain per source, in UTC and litres.
with events as (
    select * from {{ ref('int_fuel_events__unioned') }}
),

vehicles as (
    select * from {{ ref('int_vehicle_identities') }}
),

final as (
    select
        events.fuel_event_id,
        events.source,
        vehicles.vehicle_id,
        events.occurred_at,
        events.event_type,
        events.volume_l,
        events.level_before_l,
        events.level_after_l,
        events.lat,
        events.lon,
        events.address
    from events
    left join vehicles
        on vehicles.source = events.source
        and vehicles.source_vehicle_id = events.source_vehicle_id
)

select * from final

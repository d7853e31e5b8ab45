-- Metrotec refuels in the fct_fuel_events shape: event_type 'refuel', volume = after - before.
-- Position from the last fuel level reading at or before the refuel began (the parked vehicle)
-- when one was taken in the hour before.
with refuels as (
    select * from {{ ref('stg_metrotec__refuels') }}
),

positions as (
    select source_vehicle_id, recorded_at, lat, lon
    from {{ ref('int_metrotec__fuel_readings') }}
    where lat is not null and lon is not null
),

located as (
    select
        refuels.*,
        case
            when positions.recorded_at >= refuels.started_at - interval 1 hour then positions.lat
        end as lat,
        case
            when positions.recorded_at >= refuels.started_at - interval 1 hour then positions.lon
        end as lon
    from refuels
    asof left join positions
        on positions.source_vehicle_id = refuels.source_vehicle_id
        and positions.recorded_at <= refuels.started_at
),

final as (
    select
        md5('metrotec|' || source_refuel_id) as fuel_event_id,
        'metrotec' as source,
        source_vehicle_id,
        started_at as occurred_at,
        'refuel' as event_type,
        volume_l,
        level_before_l,
        level_after_l,
        lat,
        lon,
        address
    from located
    -- A "refuel" whose level did not rise is a sensor artefact; one with unknown levels stays.
    where volume_l is null or volume_l > 0
)

select * from final

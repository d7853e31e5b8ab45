-- One row per idle period (engine on, vehicle stopped) per source, in UTC. Daily by start.
{{ daily_table('started_at') }}

with periods as (
    select * from {{ ref('int_idle_periods__unioned') }}
    where {{ in_days('started_at') }}
),

vehicles as (
    select * from {{ ref('int_vehicle_identities') }}
),

final as (
    select
        periods.idle_period_id,
        periods.source,
        vehicles.vehicle_id,
        periods.started_at,
        periods.ended_at,
        periods.duration_s,
        periods.lat,
        periods.lon,
        periods.address,
        periods.trip_id
    from periods
    left join vehicles
        on vehicles.source = periods.source
        and vehicles.source_vehicle_id = periods.source_vehicle_id
)

select * from final
